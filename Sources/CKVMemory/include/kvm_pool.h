#pragma once
#include <stdint.h>

/* A pool of physical page groups in one memfd, with an exact budget.
 *
 * A group is `group_bytes` (a multiple of page_bytes) in each of `tensors` tensors: one K/V
 * unit that grows all layers at once. Tensor t of group g lives at file offset
 * (t * groups + g) * group_bytes, so consecutive groups are file-contiguous within a tensor
 * and map as one VMA.
 *
 * States of a group: free-uncommitted (no physical pages), free-committed (pages allocated,
 * unowned), owned (refs > 0). Committed bytes never exceed groups * tensors * group_bytes,
 * which never exceeds the budget. */
typedef struct kvm_pool kvm_pool;

typedef struct kvm_pool_config {
    uint32_t tensors;      /* K and V of every layer: 2 * num_layers */
    uint64_t group_bytes;  /* per tensor; a multiple of page_bytes */
    uint64_t page_bytes;   /* 4 KiB .. 2 MiB, power of two */
    uint64_t budget_bytes; /* exact physical budget */
    int32_t numa_node;     /* -1: default policy; else bind every page to this node */
    uint32_t commit_batch; /* groups committed per batch (ahead of need); 0: the default below */
} kvm_pool_config;

/* The default commit batch: up to 8 groups and at most this many bytes (tensors * group_bytes
 * each), at least one group. A batch commits under the caller's lock and, with huge pages,
 * zeroes its pages at once, so its bytes bound a first allocation's cost (8 groups of 2 MiB
 * pages in 64 tensors were 1 GiB, ~1 s). */
#define KVM_POOL_BATCH_BYTES (32ull << 20)

/* The most groups a pool holds (its group numbers are 32-bit with room to spare). */
#define KVM_POOL_MAX_GROUPS (1u << 30)

/* Creates a pool of floor(budget / (tensors * group_bytes)) groups; -EINVAL when that is 0 or
 * more than KVM_POOL_MAX_GROUPS, or the NUMA node is unavailable. Nothing is committed yet. */
int kvm_pool_create(const kvm_pool_config *cfg, kvm_pool **out);
/* Frees the pool and its pages: the memfd is cut to 0 bytes before it is closed, so the
 * pages go now even while a child forked without exec still holds the descriptor and shared
 * mappings of it (a child that touches such a mapping afterwards gets SIGBUS). In such a
 * child (a pool it inherited, kvm_fork_generation) it only unmaps and closes: the pages stay
 * its parent's. Call it after the layout's own mappings are gone. NULL: nothing. */
void kvm_pool_destroy(kvm_pool *p);

/* Takes a free group, preferring `hint` (to keep a sequence file-contiguous), then a committed
 * one, then the lowest free. Commits it (and free neighbours up to the commit batch) if needed.
 * Returns the group with refs = 1, or -ENOSPC when none is free, or -errno when committing
 * failed (the group stays free). Cost: O(groups / 64) bit scan, one commit (fallocate, or a populate
 * with huge pages) per tensor per batch. */
int64_t kvm_pool_alloc(kvm_pool *p, uint32_t hint);

/* Takes a run of up to `want` consecutive free groups, so that a sequence's pages are
 * file-contiguous and map with one mmap per tensor: the free run starting at `hint` if there is
 * one, else the first free run of at least `want` groups, else the longest free run. Commits
 * what is uncommitted. Returns the first group and stores the run's length in *got (each group
 * with refs = 1), or -ENOSPC / -errno like kvm_pool_alloc. Cost: O(groups / 64) scan. */
int64_t kvm_pool_alloc_run(kvm_pool *p, uint32_t hint, uint32_t want, uint32_t *got);
/* Like kvm_pool_alloc_run, but fitted to the free space's fragments: a single group (want 1)
 * comes from the hint, else from a free group whose neighbours are in use (so the runs stay
 * whole for callers that want many); and a run shorter than min(min_len, want) is not taken:
 * -EAGAIN (no message, nothing changed) says only such short runs are free. Cost: O(groups / 64). */
int64_t kvm_pool_alloc_run_fit(kvm_pool *p, uint32_t hint, uint32_t want, uint32_t min_len, uint32_t *got);

/* Adds an owner to an owned group. */
void kvm_pool_ref(kvm_pool *p, uint32_t group);
/* Drops an owner; at 0 the group becomes free-committed. Returns the remaining refs. */
uint32_t kvm_pool_unref(kvm_pool *p, uint32_t group);
/* The group's owners now (0: free). */
uint32_t kvm_pool_refs(const kvm_pool *p, uint32_t group);

/* Releases free-committed groups' pages to the OS (punch hole), lowest first, while more than
 * `keep_bytes` stay committed and more than `spare` free-committed groups are left: committed
 * bytes end >= keep_bytes (0 and spare 0: every free-committed group goes). The lowest `spare`
 * of them stay: a caller's hysteresis, a compaction keeps one so that the next append takes it
 * (the lowest committed, or the hint: the group a shrunk sequence's next page had) without
 * committing (and zeroing) it again. Returns bytes released; a
 * run whose hole cannot be punched (the system refuses) stays committed and is not counted.
 * Cost: O(1) when no more than `spare` groups are free-committed (the pool counts them), else
 * an O(groups / 64) word scan that stops once every such group was met, plus one punch per
 * tensor per run released. */
uint64_t kvm_pool_trim(kvm_pool *p, uint64_t keep_bytes, uint32_t spare);
/* Bitmap words trims have read since the pool was created (tests check trims' cost). O(1). */
uint64_t kvm_pool_trim_words(const kvm_pool *p);
/* Commits up to `groups` free groups that have no pages yet (they stay free, and allocation
 * prefers them), so that later allocations do not pay for it; never more than `groups`.
 * Returns how many were committed, or -errno when committing the first failed. Cost: one
 * commit per tensor per commit batch. */
int64_t kvm_pool_precommit(kvm_pool *p, uint32_t groups);

/* Copies `len` bytes at `offset` within tensor `tensor` of `group` into `dst`, without mapping
 * the group (pread on the memfd, so no extra resident mapping). */
int kvm_pool_read(const kvm_pool *p, uint32_t tensor, uint32_t group, uint64_t offset, void *dst, uint64_t len);

/* The pool's shape, fixed at creation: its memfd (owned by the pool), the byte offset of a
 * tensor's group in it, groups in all, bytes of a group per tensor, bytes of a page, tensors;
 * and its groups free now (committed or not). O(1) each. */
int kvm_pool_fd(const kvm_pool *p);
uint64_t kvm_pool_offset(const kvm_pool *p, uint32_t tensor, uint32_t group);
uint32_t kvm_pool_groups(const kvm_pool *p);
uint32_t kvm_pool_free_groups(const kvm_pool *p);
uint64_t kvm_pool_group_bytes(const kvm_pool *p);
uint64_t kvm_pool_page_bytes(const kvm_pool *p);
uint32_t kvm_pool_tensors(const kvm_pool *p);
/* Bytes of physical memory the pool holds now (committed groups * tensors * group_bytes). */
uint64_t kvm_pool_committed_bytes(const kvm_pool *p);

/* Tests: after `after` more successful commits (batches) the next one fails with EIO,
 * as a real fallocate can (ENOSPC or ENOMEM in a memory-limited cgroup); every later commit
 * fails too until this is called again. after < 0 turns the fault off (the default). */
void kvm_pool_fail_commits(kvm_pool *p, int64_t after);
/* 1 when huge pages were asked for (page_bytes = 2 MiB) and the kernel can give them to this
 * process's shmem (kvm_shmem_hugepages_refusal says NULL). Then the pool commits by write-faulting the pages through a
 * huge-page-advised view of the memfd (MADV_POPULATE_WRITE, then MADV_DONTNEED on the view), not
 * by fallocate, which allocates small pages under shmem_enabled=advise; the layouts map the
 * memfd with MADV_HUGEPAGE too, so each 2 MiB page is one page-table entry. A commit then zeroes
 * its pages at once (fallocate defers that to the first touch), ~10x faster per byte than small
 * pages' commit and first touch. */
int kvm_pool_hugepages(const kvm_pool *p);

/* Why a memfd's shmem gets no 2 MiB transparent huge pages under these settings, or NULL when
 * it can get them. `top`: the bracketed word of /sys/kernel/mm/transparent_hugepage/
 * shmem_enabled (NULL: unreadable); `per_size`: that of hugepages-2048kB/shmem_enabled (NULL:
 * absent, before Linux 6.11); `thp_disabled`: prctl(PR_GET_THP_DISABLE) of the process. Rule:
 * THP disabled by prctl, top unreadable or deny: none; else a per-size never: none; a per-size
 * always / within_size / advise: huge, whatever the top-level word; a per-size inherit or none:
 * the top-level word decides (never: none; always, within_size, advise, force: huge). Pure, O(1). */
const char *kvm_shmem_hugepages_refusal(const char *top, const char *per_size, int thp_disabled);
