/* Files for the I/O queue: O_DIRECT with a buffered fallback, and preallocation. Here because
 * O_DIRECT and fallocate need _GNU_SOURCE, which Swift's Glibc module does not see. */
#include "kvm_io.h"
#include "kvm_error.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

int kvm_io_open_file(const char *path, int *direct) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_DIRECT, 0644);
    *direct = fd >= 0;
    if (fd < 0 && errno == EINVAL) fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return kvm_fail(errno, "cannot open '%s': %s", path, strerror(errno));
    return fd;
}

int kvm_io_preallocate(int fd, uint64_t bytes) {
    int rc;
    do rc = fallocate(fd, 0, 0, (off_t)bytes); while (rc != 0 && errno == EINTR);
    if (rc != 0) return kvm_fail(errno, "fallocate of %llu bytes failed: %s", (unsigned long long)bytes, strerror(errno));
    return 0;
}
