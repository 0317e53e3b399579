/* Internal: the slab's state, shared by the slab file (slab_file.c) and its journal
 * (slab_journal.c). */
#pragma once
#include "kvm_slab.h"
#include "kvm_fork_close.h"

#include <limits.h>
#include <string.h>

/* An open slab and its journal (kvm_slab.h); a peer's (read_only) writes neither. */
struct kvm_slab {
    int fd;
    int journal_fd;
    int rewrite_fd; /* kvcache.journal.new while a compaction writes it (kvm_slab_journal_rewrite_begin), else -1 */
    int lock_fd; /* the slab file again, only to hold the directory's lock (see kvm_slab_open) */
    int lock_entry; /* lock_fd's entry among the descriptors a fork's child closes, or -1 */
    int fd_entry;   /* fd's entry there, or -1 */
    int journal_entry; /* journal_fd's entry there, or -1 */
    int rewrite_entry; /* rewrite_fd's entry there, or -1 */
    int direct;
    int read_only; /* a peer's slab (kvm_slab_open_peer): nothing is written, nothing locked */
    uint32_t capacity;
    uint32_t allocated;
    uint32_t extent_slots;
    uint64_t slot_bytes;
    int64_t dir_syncs_before_fault; /* tests (kvm_slab_fail_dir_syncs): syncs left before one fails; < 0: never */
    char journal_path[PATH_MAX];
    char fallback[256];
};

/* Closes the journal's descriptor, if open, and marks it closed. */
static inline void close_journal(kvm_slab *s) {
    if (s->journal_fd < 0) return;
    kvm_fork_close_close(s->journal_fd, s->journal_entry);
    s->journal_fd = s->journal_entry = -1;
}

/* Length of the tier's directory in s->journal_path (the path less "/kvcache.journal"). */
static inline int dir_length(const kvm_slab *s) { return (int)(strlen(s->journal_path) - sizeof "/" KVM_JOURNAL_FILE + 1); }
