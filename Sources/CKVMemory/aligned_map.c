/* Anonymous mappings aligned beyond the system page (aligned_map.h). */
#include "aligned_map.h"

#include <stddef.h>
#include <sys/mman.h>

void *kvm_map_aligned(uint64_t bytes, uint64_t align, int prot, int flags) {
    uint8_t *raw = mmap(NULL, bytes + align, prot, flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return MAP_FAILED;
    uint8_t *start = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    uint8_t *end = start + bytes, *raw_end = raw + bytes + align;
    if (start > raw) munmap(raw, (size_t)(start - raw));
    if (raw_end > end) munmap(end, (size_t)(raw_end - end));
    return start;
}
