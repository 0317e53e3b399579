#pragma once
#include <stdint.h>
#include "kvm_pool.h"

/* Paged K/V blocks, vLLM-style, placed page-aware in pool groups.
 *
 * The whole pool memfd is mapped once (one VMA); block b lives in group b / blocks_per_group at
 * offset (b % blocks_per_group) * block_bytes of every tensor, so one block id is valid in
 * every layer's K and V. Allocation fills groups the arena already holds before it takes a new
 * one from the pool, so that freed blocks leave whole groups empty and releasable. An empty
 * group stays with the arena (committed, mapped) until kvm_arena_trim. */
typedef struct kvm_arena kvm_arena;

/* Blocks one arena holds at most: bounds the engine's per-block metadata (tens of bytes each). */
#define KVM_ARENA_MAX_BLOCKS 16777216u /* 2^24 */

/* The pool's group_bytes must be kvm_arena_group_bytes(block_bytes, page_bytes). */
int kvm_arena_create(kvm_pool *pool, uint64_t block_bytes, kvm_arena **out);
void kvm_arena_destroy(kvm_arena *a);
/* Blocks one group holds: max(1, page_bytes / block_bytes). block_bytes > 0. */
uint64_t kvm_arena_blocks_per_group(uint64_t block_bytes, uint64_t page_bytes);
/* Per-tensor bytes of one group holding kvm_arena_blocks_per_group blocks, page-rounded. */
uint64_t kvm_arena_group_bytes(uint64_t block_bytes, uint64_t page_bytes);

/* A free block id, or -ENOSPC when every group is full and the pool has none left, or -errno
 * when committing a group failed. O(1) except when a new group is taken (pool scan, commit);
 * a new group is listed as fresh, to be pre-faulted (below). */
int64_t kvm_arena_alloc(kvm_arena *a);
/* Returns an allocated block. O(1). */
void kvm_arena_free(kvm_arena *a, uint32_t block);

/* Address of `block` in tensor `tensor` (K of layer l is tensor 2l, V is 2l + 1). Cost: a
 * multiply-add when blocks are evenly spaced (one per group, or filling their groups exactly:
 * every power-of-two shape), else a division too (blocks padded within their group). */
uint8_t *kvm_arena_block(const kvm_arena *a, uint32_t tensor, uint32_t block);
/* The tensor distance: kvm_arena_block(a, t + 1, b) is kvm_arena_block(a, t, b) plus this, for
 * every tensor t and block b (so V of a layer is its K plus this). Fixed at creation. */
uint64_t kvm_arena_tensor_bytes(const kvm_arena *a);
/* The block distance when blocks are evenly spaced: kvm_arena_block(a, t, b) is
 * kvm_arena_block(a, t, 0) plus b times this, for every tensor t and block b (the group's
 * bytes when a block fills its own group, the block's when several fill theirs exactly); 0
 * when blocks are padded within their group (no single distance). Fixed at creation. */
uint64_t kvm_arena_stride(const kvm_arena *a);

/* Blocks the budget holds, blocks allocated, and blocks that can still be allocated.
 * kvm_arena_used: read by the tests only. */
uint32_t kvm_arena_blocks(const kvm_arena *a);
uint32_t kvm_arena_used(const kvm_arena *a);
uint32_t kvm_arena_available(const kvm_arena *a);

/* The arena's one mapping (all blocks of all tensors): where it starts and its size. */
const uint8_t *kvm_arena_base(const kvm_arena *a);
uint64_t kvm_arena_mapped_bytes(const kvm_arena *a);

/* Gives empty groups back to the pool and releases their pages (kvm_pool_trim with `spare`:
 * that many free groups stay committed), except groups being pre-faulted, while more than
 * `keep_bytes` stay committed (0: every such group). Returns bytes released. Cost: one step per
 * empty group given back, plus the pool's trim (O(1) when nothing beyond `spare` is free). */
uint64_t kvm_arena_trim(kvm_arena *a, uint64_t keep_bytes, uint32_t spare);

/* Pre-faulting new groups outside the caller's lock. Faulting in a group's pages (zeroing them:
 * about 1 s per GiB here) is most of the cost of the first use of memory; doing it under the
 * lock that serialises the arena would stall every other caller. So kvm_arena_alloc only lists
 * the groups it takes; the caller, still under its lock, takes the list (each group is then
 * kept from kvm_arena_trim), releases its lock, calls kvm_arena_prefault on each (touches no
 * arena state, may run beside any arena call; content is unchanged, so concurrent writers are
 * safe) and, under its lock again, kvm_arena_prefault_done. A group never pre-faulted is faulted
 * by its first write instead. */
uint32_t kvm_arena_fresh_count(const kvm_arena *a);
/* Takes up to `groups` groups from the pool ahead of need (committed, listed as fresh, empty:
 * kvm_arena_trim gives them back). Returns how many, 0 when the pool has none left, or -errno
 * when taking the first failed. */
int64_t kvm_arena_reserve(kvm_arena *a, uint32_t groups);
/* Moves up to `capacity` fresh groups into `out` and marks them being pre-faulted; returns how many. */
uint32_t kvm_arena_take_fresh(kvm_arena *a, uint32_t *out, uint32_t capacity);
/* MADV_POPULATE_WRITE of `group` in every tensor. */
void kvm_arena_prefault(const kvm_arena *a, uint32_t group);
/* Ends a pre-fault begun by kvm_arena_take_fresh. */
void kvm_arena_prefault_done(kvm_arena *a, uint32_t group);
