#pragma once
#include <stdint.h>

/* An anonymous private mapping of `bytes` (a multiple of the system page; `bytes + align`
 * must not overflow) whose start is a multiple of `align` (a power of two, at least the system
 * page), for memory that huge pages back only where a 2 MiB page of it is 2 MiB aligned (the
 * contiguous layout's reservation, the disk tier's I/O buffers): the kernel aligns large
 * anonymous mappings itself only since Linux 6.7. Maps `bytes + align` and unmaps the parts
 * before and after. `flags` are mmap's, MAP_PRIVATE | MAP_ANONYMOUS added. Returns the start, or
 * MAP_FAILED with errno set; release it with munmap(start, bytes). Cost: three system calls. */
void *kvm_map_aligned(uint64_t bytes, uint64_t align, int prot, int flags);
