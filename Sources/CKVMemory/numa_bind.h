#pragma once
#include <stdint.h>

/* Binds `[addr, addr + size)` (page aligned) to NUMA node `node` (MPOL_BIND): the pages
 * faulted there later come from that node. For a shared file's mapping the policy is the
 * file's (shmem keeps one per file, which every mapping and fallocate follows); for an
 * anonymous one, the mapping's: call it before the first touch. 0, or -errno with a message:
 * EINVAL when libnuma reports NUMA unavailable or the node does not exist, else mbind's.
 * Cost: one mbind. */
int kvm_bind_node(void *addr, uint64_t size, int32_t node);
