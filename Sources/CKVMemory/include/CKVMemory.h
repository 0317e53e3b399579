/* CKVMemory: the physical side of KVCacheEngine.
 *
 *   kvm_pool    a memfd of physical page groups with an exact budget (page_pool.c)
 *   kvm_ranges  contiguous per-sequence virtual ranges backed by pool groups (virtual_ranges.c)
 *   kvm_arena   paged K/V blocks placed page-aware in pool groups (block_arena.c)
 *   kvm_io      the disk tier's I/O queue: io_uring, or a pread/pwrite thread pool (io_ring.c)
 *   kvm_slab    the disk tier's slab file of slots and its journal (slab_file.c, slab_journal.c,
 *               checksum.c)
 *   kvm_fork_close  the descriptors a fork's child closes: the disk tier's locks (fork_close.c)
 *   kvm_lock    the engine's lock, which a holder hands to blocked callers between steps (engine_lock.c)
 *
 * Every call that can fail returns 0 (or a non-negative value) on success and a negative errno
 * on failure, and then kvm_error() holds a message for the calling thread. Nothing here is
 * thread-safe (the engine serialises calls) except where a header says otherwise:
 * kvm_io_wait and kvm_io_wake (kvm_io.h), kvm_arena_prefault (kvm_arena.h), the fork-close
 * table (kvm_fork_close.h) and kvm_lock (kvm_lock.h). */
#pragma once
#include "kvm_error.h"
#include "kvm_pool.h"
#include "kvm_ranges.h"
#include "kvm_arena.h"
#include "kvm_io.h"
#include "kvm_slab.h"
#include "kvm_fork_close.h"
#include "kvm_lock.h"
