/* Files for the I/O queue: O_DIRECT with a buffered fallback, and preallocation. Here because
 * O_DIRECT and fallocate need _GNU_SOURCE, which Swift's Glibc module does not see. */
#include "kvm_io.h"
#include "kvm_error.h"
#include "aligned_map.h"
#include "numa_bind.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

int kvm_io_open_file(const char *path, int *direct) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_DIRECT, 0644);
    *direct = fd >= 0;
    if (fd < 0 && errno == EINVAL) fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return kvm_fail(errno, "cannot open '%s': %s", path, strerror(errno));
    return fd;
}

uint64_t kvm_file_size_limit(void) {
    struct rlimit l;
    if (getrlimit(RLIMIT_FSIZE, &l) != 0 || l.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
    return (uint64_t)l.rlim_cur;
}

int kvm_io_preallocate(int fd, uint64_t bytes) {
    uint64_t limit = kvm_file_size_limit();
    if (bytes > limit)
        return kvm_fail(EFBIG, "fallocate of %llu bytes would pass the process's file-size limit (RLIMIT_FSIZE, %llu bytes)",
                        (unsigned long long)bytes, (unsigned long long)limit);
    int rc;
    do rc = fallocate(fd, 0, 0, (off_t)bytes); while (rc != 0 && errno == EINTR);
    if (rc != 0) return kvm_fail(errno, "fallocate of %llu bytes failed: %s", (unsigned long long)bytes, strerror(errno));
    return 0;
}

#define HUGE_BYTES (2ull << 20)

/* What both kinds of buffers share: `bytes` rounded up to 2 MiB (*size), mapped aligned to
 * 2 MiB and, with numa_node >= 0, bound to that node before any page is touched, as the page
 * pool binds its memfd. NULL with errno and a message naming `caller`. */
static uint8_t *map_buffers(const char *caller, uint64_t bytes, int32_t numa_node, uint64_t *size) {
    /* 0 would map one huge page and unmap it all again (returning a dangling pointer); past
     * UINT64_MAX - 2 MiB the rounding below wraps. */
    if (bytes == 0 || bytes > UINT64_MAX - 2 * HUGE_BYTES) {
        kvm_fail(EINVAL, "%s: %llu bytes: must be 1 .. 2^64 - 4 MiB", caller, (unsigned long long)bytes);
        errno = EINVAL;
        return NULL;
    }
    *size = (bytes + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1);
    uint8_t *start = kvm_map_aligned(*size, HUGE_BYTES, PROT_READ | PROT_WRITE, 0);
    if (start == MAP_FAILED) {
        int err = errno;
        kvm_fail(err, "mapping %llu bytes of I/O buffers failed: %s", (unsigned long long)*size, strerror(err));
        errno = err;
        return NULL;
    }
    int bound = numa_node >= 0 ? kvm_bind_node(start, *size, numa_node) : 0;
    if (bound != 0) {
        munmap(start, *size);
        errno = -bound;
        return NULL;
    }
    return start;
}

void *kvm_io_alloc_buffers(uint64_t bytes, int32_t numa_node) {
    uint64_t size;
    uint8_t *start = map_buffers("kvm_io_alloc_buffers", bytes, numa_node, &size);
    if (!start) return NULL;
    madvise(start, size, MADV_HUGEPAGE); /* a hint: without THP the buffers still work */
    /* Not inherited by a fork's child, which may not use the engine (kvcache.h, PROCESSES):
     * io_uring pins registered buffers, and the kernel copies pinned pages into the child at
     * the fork instead of sharing them copy-on-write (160 MiB and 0.7 s per fork for an 80-layer
     * engine's staging). Best effort: a failed madvise only leaves the copy as before. */
    (void)madvise(start, size, MADV_DONTFORK);
    memset(start, 0, size);              /* populate now, not on the I/O path */
    return start;
}

void *kvm_io_reserve_buffers(uint64_t bytes, int32_t numa_node) {
    uint64_t size;
    return map_buffers("kvm_io_reserve_buffers", bytes, numa_node, &size);
}

void kvm_io_free_buffers(void *p, uint64_t bytes) {
    if (!p) return;
    munmap(p, (bytes + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1));
}
