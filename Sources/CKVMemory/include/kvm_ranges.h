#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "kvm_pool.h"

/* Contiguous virtual ranges, vAttention-style: for each sequence slot and tensor one range of
 * range_bytes, reserved PROT_NONE/MAP_NORESERVE (no memory), into which pool groups are mapped
 * page by page as the sequence grows. Page p of every tensor of a slot maps the same group, so
 * one page table per slot serves all layers.
 *
 * A mapped page holds one pool reference. Mappings are counted from the page table as the
 * kernel has them: the VMAs of the reservation, each run of file-contiguous mapped pages and
 * each reserved stretch one, adjacent reserved stretches merged and a run merged with the next
 * range's where their pool pages are file-contiguous (exact for the pages the table lists; an
 * end stretch merged with a neighbour outside the reservation is one fewer in /proc/self/maps).
 * A tensor whose mmap failed may keep mappings the table does not list (kvm_ranges_unmap): the
 * count then adds a slack for the slot's kept span of pages, bounded without reading the kernel
 * (at most one VMA per tensor and page boundary the span touches; at most 2 more per mmap less
 * the table's change), until successful mmaps have replaced the span, so it never trails the
 * kernel (it may lead it by the slack, and where the kernel later drops a split it left). Only
 * a map the count would refuse reads /proc/self/maps, to take the slack from the kernel. Under lockstep growth
 * (sequences taking a group each in turn) every page is a run: one mapping per page per tensor.
 * The kernel's
 * vm.max_map_count is the process's, so the counts of every range of the process are kept
 * together under one limit: vm.max_map_count less what the process holds apart from its ranges
 * and 4096 more, taken when a range is created while none is live, lowered by each later
 * one when the rest of the process has mapped more since (a second engine's growth would otherwise meet the kernel's
 * refusal while each count is below its own limit), and taken again (at most once a second,
 * reading /proc/self/maps) before a map is refused, so that it rises once the rest of the
 * process has let go of mappings. A map that would pass it, or this range's
 * own limit where lowered, fails with -ENOMEM and a message naming vm.max_map_count. */
typedef struct kvm_ranges kvm_ranges;

/* Reserves slots * tensors * range_bytes of address space (range_bytes is rounded up to the
 * pool's page size), starting at a multiple of the page size. -ENOMEM with a message when the address space or the mapping limit cannot
 * hold the configuration (the address space: the process's 128 TiB, shared by every range and
 * everything else it maps; the message names what the live ranges reserve). */
int kvm_ranges_create(kvm_pool *pool, uint32_t slots, uint64_t range_bytes, kvm_ranges **out);
/* Unmaps everything (dropping pool references) and releases the reservation. */
void kvm_ranges_destroy(kvm_ranges *r);

/* Base address of tensor `tensor` of `slot`. */
uint8_t *kvm_ranges_tensor(const kvm_ranges *r, uint32_t slot, uint32_t tensor);
/* Group mapped at `page` of `slot`, or -1. */
int64_t kvm_ranges_group(const kvm_ranges *r, uint32_t slot, uint32_t page);
/* Pages in one range. */
uint32_t kvm_ranges_pages(const kvm_ranges *r);

/* Maps groups first_group .. first_group + n - 1 (each already owned by the caller, who keeps
 * its own references) at pages page .. page + n - 1 of every tensor of `slot`, replacing
 * whatever was mapped there. One mmap per tensor. Takes one pool reference per group and drops
 * the replaced groups' references. */
int kvm_ranges_map(kvm_ranges *r, uint32_t slot, uint32_t page, uint32_t first_group, uint32_t n);
/* Unmaps pages [first, end) of `slot` back to reserved address space, dropping references.
 * The pages leave the table even when a tensor's mmap fails (-ENOMEM once vm.max_map_count is
 * reached: unmapping the middle of a mapping splits it), so the table never lists a page that a
 * tensor does not map; such a tensor keeps a mapping the engine no longer uses, until a later
 * map replaces it. A failed kvm_ranges_map leaves its pages unmapped the same way. */
int kvm_ranges_unmap(kvm_ranges *r, uint32_t slot, uint32_t first, uint32_t end);
/* Mapped pages of `slot` (the highest mapped page + 1). */
uint32_t kvm_ranges_mapped(const kvm_ranges *r, uint32_t slot);

/* The reservation holding every range: where it starts and its size. */
const uint8_t *kvm_ranges_base(const kvm_ranges *r);
uint64_t kvm_ranges_reserved_bytes(const kvm_ranges *r);

/* This range's counted mappings (above: never fewer than the kernel's), and the limit its own
 * count is kept under: the process's unless lowered. kvm_ranges_mapping_limit: read by the
 * tests only. A map or unmap updates the count in O(its pages + tensors); a map the count
 * would refuse next to kept pages reads /proc/self/maps first, in O(the process's mappings),
 * at most once per change near kept pages. */
uint64_t kvm_ranges_mappings(const kvm_ranges *r);
uint64_t kvm_ranges_mapping_limit(const kvm_ranges *r);
/* The counted mappings of every live range of the process (with those that maps under way
 * have reserved), and the limit they are kept under together (0 before the first range). */
uint64_t kvm_ranges_process_mappings(void);
uint64_t kvm_ranges_process_mapping_limit(void);
/* Whether the process's ranges count more than 7/8 of the process's limit: then a slot freed
 * in one engine should give its mappings back, since another engine cannot reclaim them. */
bool kvm_ranges_process_near_limit(void);
/* Lowers this range's limit to `limit` mappings (never raising it; the process's limit still
 * holds): for a process that needs its mappings elsewhere, and for tests of the limit path. */
void kvm_ranges_set_mapping_limit(kvm_ranges *r, uint64_t limit);
/* Tests: after the next `after` mmaps of maps and unmaps, `n` fail with ENOMEM (as at
 * vm.max_map_count). */
void kvm_ranges_fail_mmaps(kvm_ranges *r, uint32_t after, uint32_t n);
/* Tests: how many times this range's count was read from /proc/self/maps. */
uint64_t kvm_ranges_rereads(const kvm_ranges *r);
