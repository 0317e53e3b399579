/* Binding memory to a NUMA node (numa_bind.h): the page pool's memfd and the disk tier's
 * staging buffers follow kvc_config.numa_node alike. */
#include "numa_bind.h"
#include "kvm_error.h"

#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <string.h>

int kvm_bind_node(void *addr, uint64_t size, int32_t node) {
    if (numa_available() < 0) return kvm_fail(EINVAL, "numa_node %d requested but libnuma reports NUMA unavailable", node);
    if (node > numa_max_node()) return kvm_fail(EINVAL, "numa_node %d does not exist (highest node is %d)", node, numa_max_node());
    unsigned long mask[16] = {0}; /* room for nodes 0..1023 */
    if ((size_t)node >= sizeof mask * 8) return kvm_fail(EINVAL, "numa_node %d is past the %zu nodes this library binds to", node, sizeof mask * 8);
    mask[node / 64] |= 1ul << (node % 64);
    if (mbind(addr, size, MPOL_BIND, mask, sizeof mask * 8, 0) != 0)
        return kvm_fail(errno, "mbind to NUMA node %d failed: %s", node, strerror(errno));
    return 0;
}
