/* The disk tier's append-only journal of slot records, beside the slab file (slab_file.c). */
#include "slab_file.h"
#include "kvm_io.h"
#include "kvm_error.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOURNAL_SEED 0x6a6f75726e616c31ull /* "journal1" */

_Static_assert(sizeof(kvm_journal_record) == 64, "journal records are 64 bytes");

static uint64_t record_sum(const kvm_journal_record *r) {
    return kvm_checksum64(r, offsetof(kvm_journal_record, record_checksum), JOURNAL_SEED);
}

/* True when r is a whole record whose magic and checksum hold. */
static int record_valid(const kvm_journal_record *r) {
    return r->magic == KVM_JOURNAL_MAGIC && r->record_checksum == record_sum(r);
}

/* Fills in the magic and record checksum of n records. */
static void seal(kvm_journal_record *records, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        records[i].magic = KVM_JOURNAL_MAGIC;
        records[i].record_checksum = record_sum(&records[i]);
    }
}

/* Writes len bytes at fd's end, through short writes: 0, or -1 with errno set by the write
 * that failed (a write of 0 bytes counts as EIO). */
static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Seals n records (magic, record checksum) and appends them to the journal file fd, now
 * `size` bytes long, named `path` in messages, through short writes (write_all): 0, or -errno
 * with kvm_error() naming the file and the reason; -EFBIG, writing nothing, when they would
 * pass the process's file-size limit (the kernel would end the process: SIGXFSZ). The one way
 * journal records are written, by an append and by a compaction. */
static int write_records(int fd, uint64_t size, kvm_journal_record *records, uint32_t n, const char *path) {
    size_t bytes = (size_t)n * sizeof *records;
    uint64_t limit = kvm_file_size_limit();
    if (size + bytes > limit)
        return kvm_fail(EFBIG, "offload: %u journal records would take '%s' past the process's file-size limit (RLIMIT_FSIZE, %llu bytes)",
                        n, path, (unsigned long long)limit);
    seal(records, n);
    if (write_all(fd, records, bytes) != 0) return kvm_fail(errno, "offload: writing '%s' failed: %s", path, strerror(errno));
    return 0;
}

int kvm_slab_journal_append(kvm_slab *s, kvm_journal_record *records, uint32_t n) {
    /* A short write before (a full disk, a file-size limit) left part of a record at the end:
     * cut it off, so that these records start on a record boundary and the replay and peers
     * tailing the journal read them. One fstat per batch. */
    struct stat st;
    if (fstat(s->journal_fd, &st) != 0) return kvm_fail(errno, "offload journal: fstat failed: %s", strerror(errno));
    uint64_t torn = (uint64_t)st.st_size % sizeof *records;
    if (torn != 0 && ftruncate(s->journal_fd, st.st_size - (off_t)torn) != 0)
        return kvm_fail(errno, "offload journal: cutting a torn record of %llu bytes failed: %s", (unsigned long long)torn, strerror(errno));
    return write_records(s->journal_fd, (uint64_t)st.st_size - torn, records, n, s->journal_path);
}

/* Reads up to cap whole records (valid or not) at byte from_byte into out: how many, or -errno.
 * *partial receives the bytes of a partial record read after them (when fewer than cap were
 * read, the file ends there: a record being appended, or a torn tail), which is not read. One
 * pread. */
static int64_t read_records(kvm_slab *s, uint64_t from_byte, kvm_journal_record *out, uint32_t cap, uint32_t *partial) {
    ssize_t n;
    do n = pread(s->journal_fd, out, (size_t)cap * sizeof *out, (off_t)from_byte); while (n < 0 && errno == EINTR);
    if (n < 0) return kvm_fail(errno, "offload journal read failed: %s", strerror(errno));
    *partial = (uint32_t)((size_t)n % sizeof *out);
    return (int64_t)((size_t)n / sizeof *out);
}

int64_t kvm_slab_journal_read(kvm_slab *s, uint64_t from_byte, kvm_journal_record *out, uint32_t cap) {
    if (from_byte % sizeof *out != 0) return kvm_fail(EINVAL, "offload journal: offset %llu is not a record boundary", (unsigned long long)from_byte);
    uint32_t partial;
    int64_t count = read_records(s, from_byte, out, cap, &partial);
    for (int64_t i = 0; i < count; i++)
        if (!record_valid(&out[i])) return i; /* torn tail */
    return count;
}

int64_t kvm_slab_journal_replay(kvm_slab *s, kvm_journal_record *latest, uint32_t slots, kvm_journal_skipped *skipped) {
    memset(latest, 0, (size_t)slots * sizeof *latest);
    memset(skipped, 0, sizeof *skipped);
    kvm_journal_record buf[256];
    uint64_t max_generation = 0;
    uint64_t pos = 0;
    for (;;) {
        uint32_t partial;
        int64_t count = read_records(s, pos, buf, 256, &partial);
        if (count < 0) return count;
        for (int64_t i = 0; i < count; i++) {
            const kvm_journal_record *r = &buf[i];
            if (!record_valid(r)) {
                skipped->unreadable++;
                continue;
            }
            if (r->generation >= KVM_JOURNAL_GENERATION_LIMIT) {
                skipped->generation++;
                continue;
            }
            if (r->generation > max_generation) max_generation = r->generation;
            if (r->slot < slots) latest[r->slot] = *r;
            else skipped->outside++;
        }
        pos += (uint64_t)count * sizeof *buf;
        if (count < 256) {
            skipped->torn_tail_bytes = partial; /* the journal ends inside a record */
            break;
        }
    }
    return (int64_t)max_generation;
}

int kvm_sync_parent(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int entry;
    int fd = kvm_fork_close_open(dir, O_RDONLY | O_DIRECTORY, 0, &entry);
    if (fd < 0) return kvm_fail(errno, "offload: cannot open the directory '%s' to sync it: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : kvm_fail(errno, "offload: fsync of the directory '%s' failed: %s", dir, strerror(errno));
    kvm_fork_close_close(fd, entry);
    return rc;
}

uint64_t kvm_slab_journal_bytes(const kvm_slab *s) {
    struct stat st;
    return fstat(s->journal_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* The compaction's temporary file, beside the journal. */
static void rewrite_path(const kvm_slab *s, char *out, size_t size) { snprintf(out, size, "%.*s/" KVM_JOURNAL_REWRITE_FILE, dir_length(s), s->journal_path); }

int kvm_slab_journal_rewrite_begin(kvm_slab *s) {
    kvm_slab_journal_rewrite_abort(s);
    char tmp[PATH_MAX + 8];
    rewrite_path(s, tmp, sizeof tmp);
    /* Opened as the journal is (appending): once renamed this descriptor is the journal, so
     * nothing is opened after the rename and no failure leaves the tier appending to a file
     * that is no longer at its path. Created exclusively, after removing what is at the name
     * (a leftover of a process that ended in the middle, or a planted link), so that it is a
     * new file of this engine's alone. */
    unlink(tmp);
    int fd = kvm_tier_file_open(tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND, KVM_TIER_FILE_OWN, &s->rewrite_entry);
    if (fd < 0) return fd;
    s->rewrite_fd = fd;
    return 0;
}

int kvm_slab_journal_rewrite_add(kvm_slab *s, kvm_journal_record *records, uint32_t n) {
    char tmp[PATH_MAX + 8];
    rewrite_path(s, tmp, sizeof tmp);
    struct stat st;
    if (fstat(s->rewrite_fd, &st) != 0) return kvm_fail(errno, "offload: fstat of '%s' failed: %s", tmp, strerror(errno));
    return write_records(s->rewrite_fd, (uint64_t)st.st_size, records, n, tmp);
}

int kvm_slab_journal_rewrite_commit(kvm_slab *s) {
    char tmp[PATH_MAX + 8];
    rewrite_path(s, tmp, sizeof tmp);
    int rc = 0;
    if (fsync(s->rewrite_fd) != 0) rc = kvm_fail(errno, "offload: fsync of '%s' failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, s->journal_path) != 0)
        rc = kvm_fail(errno, "offload: renaming '%s' over the journal failed: %s", tmp, strerror(errno));
    if (rc != 0) {
        kvm_slab_journal_rewrite_abort(s);
        return rc;
    }
    close_journal(s);
    s->journal_fd = s->rewrite_fd;
    s->journal_entry = s->rewrite_entry;
    s->rewrite_fd = s->rewrite_entry = -1;
    /* The rename is durable once the directory is: until then a crash may bring back the old
     * journal (valid too: a slot it names is checked against its header when read). */
    return kvm_slab_sync_journal_dir(s) == 0 ? 0 : 1;
}

int kvm_slab_sync_journal_dir(kvm_slab *s) {
    /* Atomic: a kvc_engine_sync calls this without the engine's lock, beside a compaction. */
    int64_t left = __atomic_load_n(&s->dir_syncs_before_fault, __ATOMIC_RELAXED);
    while (left > 0 && !__atomic_compare_exchange_n(&s->dir_syncs_before_fault, &left, left - 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    if (left == 0)
        return kvm_fail(EIO, "offload: fsync of the directory of '%s' failed: injected fault (kvm_slab_fail_dir_syncs)", s->journal_path);
    return kvm_sync_parent(s->journal_path);
}

void kvm_slab_fail_dir_syncs(kvm_slab *s, int64_t after) { __atomic_store_n(&s->dir_syncs_before_fault, after, __ATOMIC_RELAXED); }

void kvm_slab_journal_rewrite_abort(kvm_slab *s) {
    if (s->rewrite_fd < 0) return;
    char tmp[PATH_MAX + 8];
    rewrite_path(s, tmp, sizeof tmp);
    kvm_fork_close_close(s->rewrite_fd, s->rewrite_entry);
    s->rewrite_fd = s->rewrite_entry = -1;
    unlink(tmp);
}
