/* The disk tier's slab file of fixed-size slots; its journal is slab_journal.c. */
#include "slab_file.h"
#include "kvm_io.h"
#include "kvm_error.h"
#include "kvm_fork_close.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define HEADER_SEED 0x736c6f7468647231ull  /* "slothdr1" */
#define PAYLOAD_SEED 0x736c6f7464617431ull /* "slotdat1" */

_Static_assert(sizeof(kvm_slot_header) <= KVM_SLOT_HEADER_BYTES, "slot header fits its space");

static int logged_buffered;
static int logged_sparse;

/* How long kvm_slab_open waits for the I/O of an engine that ended (lock_io). */
#define IO_WAIT_SECONDS 60
/* How long it tries the directory's lock again (lock_dir). */
#define LOCK_WAIT_MS 1000

/* Takes the directory's lock, flock on s->lock_fd, tried again every 1 to 16 ms for up to
 * LOCK_WAIT_MS while another description holds it: 0, or -errno of the last try
 * (EWOULDBLOCK: held all along). A flock belongs to its open file description, and a process
 * that another thread is starting (posix_spawn, vfork, fork then exec) holds a copy of every
 * descriptor of its parent until its exec, the fork-close table notwithstanding; so the lock
 * of an engine destroyed a moment ago can stay held for a few milliseconds after its close
 * (a plain C loop closing and reopening a locked file beside a thread that posix_spawns
 * /bin/true: 39% of the reopens refused). Refusing then told a host that destroyed an engine
 * and created one on its directory again "in use by another engine". Costs a directory really
 * in use LOCK_WAIT_MS before its refusal. */
static int lock_dir(kvm_slab *s) {
    for (long waited_us = 0, step_us = 1000;; waited_us += step_us) {
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0) return 0;
        int err = errno;
        if (err != EWOULDBLOCK && err != EINTR) return -err;
        if (waited_us >= LOCK_WAIT_MS * 1000L) return -EWOULDBLOCK;
        usleep((useconds_t)step_us);
        if (step_us < 16000) step_us *= 2;
    }
}

/* Takes the lock of the slab's I/O descriptor, s->fd: an open-file-description lock (fcntl
 * F_OFD_SETLK, whole file, write), which goes only with the last reference to that
 * description: the descriptor, an io_uring ring's registered file, the requests in flight on
 * it. Called under the directory's lock, so whoever holds it is an engine that ended (killed,
 * or destroyed) whose I/O has not: a killed process's queued slab writes, which would land on
 * this engine's slots after it wrote and synced them (a throttled device: up to seconds), or
 * a ring's deferred teardown after kvm_slab_close (milliseconds). Waits for it, polling every
 * 1 to 16 ms, at most IO_WAIT_SECONDS, and logs a wait over a second. Not waited for: a
 * conflicting lock of another kind (F_OFD_GETLK gives its l_pid, -1 only for OFD locks: a
 * file system that maps flock onto byte-range locks, as NFS does, shows the directory's own
 * lock there; or another program's fcntl lock), nor a file system without OFD locks: the slab
 * then goes without this lock, as before it existed. 0, or -EBUSY when the time is up. The
 * thread backend needs none of this (a killed process's threads end their writes before its
 * descriptors close), but it costs it nothing. */
static int lock_io(kvm_slab *s, const char *dir) {
    long waited_us = 0, step_us = 1000;
    for (;;) {
        struct flock want = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(s->fd, F_OFD_SETLK, &want) == 0) break;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EACCES) return 0;
        struct flock held = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(s->fd, F_OFD_GETLK, &held) == 0 && held.l_type != F_UNLCK && held.l_pid != -1) return 0;
        if (waited_us >= IO_WAIT_SECONDS * 1000000L)
            return kvm_fail(EBUSY, "offload_dir '%s': the engine that used it before ended, but I/O it queued on its slab has not after %d s "
                                   "(a killed process's writes to a slow device); try again once it has", dir, IO_WAIT_SECONDS);
        usleep((useconds_t)step_us);
        waited_us += step_us;
        if (step_us < 16000) step_us *= 2;
    }
    if (waited_us >= 1000000L) {
        char line[PATH_MAX + 128];
        snprintf(line, sizeof line, "offload_dir '%s': waited %.1f s for the I/O an ended engine had queued on its slab", dir, waited_us / 1e6);
        kvm_log(line);
    }
    return 0;
}

/* Every descriptor a slab opens, for its life or for one call, is opened and registered among
 * those a fork's child closes at once (kvm_fork_close_open), and taken out of that table before
 * it is closed, in the same fork bracket (kvm_fork_close_close), so that no child closes the
 * number once another open reuses it nor gets it open and unregistered: a child then holds none of the tier's files (a journal a compaction replaced, a
 * peer's slab the owner removed, and their disk space) nor their locks. */

/* Releases the directory's lock (a peer holds none); close_fd closes the I/O descriptor. */
static void close_lock(kvm_slab *s) {
    if (s->lock_fd < 0) return;
    kvm_fork_close_close(s->lock_fd, s->lock_entry);
}

static void close_fd(kvm_slab *s) {
    if (s->fd < 0) return;
    kvm_fork_close_close(s->fd, s->fd_entry);
}

/* Room a path needs past its directory for the longest name the tier gives a file there, with
 * its '/' and NUL (TierIdentity's temporary file; the journal's rewrite is one byte shorter). */
#define TIER_NAME_ROOM sizeof "/kvcache.identity.tmp"

int kvm_slab_check_dir_length(const char *dir, const char *what) {
    size_t n = strlen(dir);
    if (n + TIER_NAME_ROOM <= PATH_MAX) return 0;
    return kvm_fail(EINVAL, "%s of %zu bytes is too long: its files' paths would pass PATH_MAX (%d bytes); at most %zu bytes", what, n,
                    PATH_MAX, PATH_MAX - TIER_NAME_ROOM);
}

int kvm_tier_file_open(const char *path, int flags, int checks, int *entry) {
    /* O_NONBLOCK until the file is known to be regular: an open of a FIFO for reading waits
     * for a writer, here inside the fork bracket (every fork() of the process would wait). */
    int fd = kvm_fork_close_open(path, flags | O_NOFOLLOW | O_NONBLOCK, 0600, entry);
    /* Only the engine's own files are its to remove; a peer's are its owner's to fix. */
    const char *own = checks & KVM_TIER_FILE_OWN ? "" : "peer file ";
    const char *advice = checks & KVM_TIER_FILE_OWN ? "remove it, or give the engine a directory of its own"
                                                    : "have its owner fix the directory, or leave it out of peer_offload_dirs";
    if (fd < 0) {
        int err = errno;
        if (err == ELOOP)
            return kvm_fail(ELOOP, "offload: %s'%s' is a symbolic link; a tier's files are never opened through one (it would read "
                                   "or write the file it names): %s", own, path, advice);
        return kvm_fail(err, "offload: cannot open '%s': %s", path, strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        kvm_fork_close_close(fd, *entry);
        *entry = -1;
        return kvm_fail(err, "offload: fstat of '%s' failed: %s", path, strerror(err));
    }
    unsigned mode = st.st_mode & 07777, me = geteuid();
    char why[160] = "";
    if (!S_ISREG(st.st_mode))
        snprintf(why, sizeof why, "is not a regular file");
    else if ((checks & KVM_TIER_FILE_OWN) && st.st_uid != me)
        snprintf(why, sizeof why, "is owned by uid %u, not by this process's user (uid %u)", (unsigned)st.st_uid, me);
    else if ((checks & KVM_TIER_FILE_OWN) && st.st_nlink != 1)
        snprintf(why, sizeof why, "has %lu links (another name of it may be a file elsewhere)", (unsigned long)st.st_nlink);
    else if ((checks & KVM_TIER_FILE_SECRET) && (mode & 077))
        snprintf(why, sizeof why, "is readable or writable by group or others (mode %04o): its fingerprint key is no secret", mode);
    else if ((checks & KVM_TIER_FILE_SEALED) && (mode & 022))
        snprintf(why, sizeof why, "is writable by group or others (mode %04o): its fingerprint key may be anyone's", mode);
    if (!why[0] && !(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
        snprintf(why, sizeof why, "could not be made blocking again: %s", strerror(errno)); /* io_uring would not wait on it */
    if (why[0]) {
        kvm_fork_close_close(fd, *entry);
        *entry = -1;
        return kvm_fail(EPERM, "offload: %s'%s' %s; a tier's files must be its engine's alone (see kvcache.h, DISK TIER): %s", own,
                        path, why, advice);
    }
    if ((checks & KVM_TIER_FILE_OWN) && (flags & O_CREAT) && (mode & 077) && fchmod(fd, 0600) != 0) {
        /* kept as it is: the owner could not narrow it (a read-only file system would have refused the open) */
    }
    return fd;
}

int kvm_slab_open(const kvm_slab_config *cfg, kvm_slab **out) {
    if (!cfg || !out || !cfg->dir) return kvm_fail(EINVAL, "offload: no directory given");
    if (kvm_slab_check_dir_length(cfg->dir, "offload_dir") != 0) return -EINVAL;
    if (cfg->slot_bytes <= KVM_SLOT_HEADER_BYTES || cfg->slot_bytes % 4096 != 0)
        return kvm_fail(EINVAL, "offload: slot of %llu bytes is not a multiple of 4096 above the header", (unsigned long long)cfg->slot_bytes);
    if (cfg->max_bytes < cfg->slot_bytes)
        return kvm_fail(EINVAL, "offload_bytes %llu is smaller than one slot of %llu bytes (one block of every layer's K and V plus a 4096-byte header)",
                        (unsigned long long)cfg->max_bytes, (unsigned long long)cfg->slot_bytes);
    struct stat st;
    if (stat(cfg->dir, &st) != 0) return kvm_fail(errno, "offload_dir '%s': %s", cfg->dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return kvm_fail(ENOTDIR, "offload_dir '%s' is not a directory", cfg->dir);
    /* Without the sticky bit anyone may rename or remove a file there: swap the journal or the
     * identity for one of theirs between two opens, or take the tier's files away under it. */
    if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
        return kvm_fail(EPERM, "offload_dir '%s' is writable by every user without the sticky bit (mode %04o): any of them could "
                               "replace or remove the tier's files; make it 0700 (or 1777, as /tmp)", cfg->dir,
                        (unsigned)(st.st_mode & 07777));
    /* With it, the directory's owner still may (the sticky bit binds everyone else): a
     * world-writable directory must be this user's or root's (as /tmp). */
    if ((st.st_mode & S_IWOTH) && st.st_uid != geteuid() && st.st_uid != 0)
        return kvm_fail(EPERM, "offload_dir '%s' is writable by every user and owned by uid %u, who may replace or remove the "
                               "tier's files even with the sticky bit; use a directory of this user's (uid %u) or root's",
                        cfg->dir, (unsigned)st.st_uid, (unsigned)geteuid());
    /* The files are named by the directory's absolute path: a process that changes its
     * directory later (a daemon's chdir("/")) still names them in the journal's compaction
     * (rename) and the sync's check that they are still at their paths. */
    char dir[PATH_MAX];
    if (!realpath(cfg->dir, dir)) return kvm_fail(errno, "offload_dir '%s': %s", cfg->dir, strerror(errno));
    if (kvm_slab_check_dir_length(dir, "offload_dir's absolute path") != 0) return -EINVAL;

    kvm_slab *s = calloc(1, sizeof *s);
    if (!s) return kvm_fail(ENOMEM, "offload: out of memory");
    s->lock_entry = s->fd_entry = s->journal_entry = s->rewrite_entry = -1;
    s->rewrite_fd = -1;
    s->dir_syncs_before_fault = -1;
    s->slot_bytes = cfg->slot_bytes;
    uint64_t cap = cfg->max_bytes / cfg->slot_bytes;
    s->capacity = cap > 0x7fffffffu ? 0x7fffffffu : (uint32_t)cap;
    s->extent_slots = cfg->extent_slots ? cfg->extent_slots : 64;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" KVM_SLAB_FILE, dir);
    snprintf(s->journal_path, sizeof s->journal_path, "%s/" KVM_JOURNAL_FILE, dir);
    int flags = O_RDWR | O_CREAT;
    /* One engine per directory: a second writer would overwrite the first one's slots and
     * rewrite its journal. The lock is taken before anything else is opened, on a descriptor
     * of its own: io_uring keeps a registered file open until its ring's deferred teardown, so
     * a lock on the I/O descriptor would outlive kvm_slab_close (and a killed process) for a
     * while. This one goes with kvm_slab_close or the process's death; a child forked without
     * exec closes its copy at once (kvm_fork_close.h), or the lock would last as long as it. */
    s->lock_fd = kvm_tier_file_open(path, flags, KVM_TIER_FILE_OWN, &s->lock_entry);
    if (s->lock_fd < 0) {
        int rc = s->lock_fd;
        free(s);
        return rc;
    }
    int locked = lock_dir(s);
    if (locked != 0) {
        int err = -locked;
        close_lock(s);
        free(s);
        if (err == EWOULDBLOCK)
            return kvm_fail(EBUSY, "offload_dir '%s' is in use by another engine (its slab file is locked); give each engine its own offload_dir",
                            cfg->dir);
        return kvm_fail(err, "offload: cannot lock '%s': %s", path, strerror(err));
    }
    s->fd = cfg->force_buffered ? -1 : kvm_tier_file_open(path, flags | O_DIRECT, KVM_TIER_FILE_OWN, &s->fd_entry);
    if (s->fd >= 0) {
        s->direct = 1;
    } else if (cfg->force_buffered || s->fd == -EINVAL) {
        snprintf(s->fallback, sizeof s->fallback, "%s: O_DIRECT %s; using buffered I/O (data passes through the page cache)", path,
                 cfg->force_buffered ? "disabled by configuration" : "refused by the file system (EINVAL)");
        if (!cfg->force_buffered) kvm_log_once(&logged_buffered, "%s", s->fallback);
        s->fd = kvm_tier_file_open(path, flags, KVM_TIER_FILE_OWN, &s->fd_entry);
    }
    if (s->fd < 0) {
        int rc = s->fd;
        close_lock(s);
        free(s);
        return rc;
    }
    int rc = lock_io(s, cfg->dir);
    if (rc == 0) {
        s->journal_fd = kvm_tier_file_open(s->journal_path, O_RDWR | O_CREAT | O_APPEND, KVM_TIER_FILE_OWN, &s->journal_entry);
        if (s->journal_fd < 0) rc = s->journal_fd;
    }
    if (rc != 0) {
        close_fd(s);
        close_lock(s);
        free(s);
        return rc;
    }
    /* Slots already preallocated by an earlier run stay usable, up to max_bytes; the file is
     * cut to it only by kvm_slab_fit, once the directory is known to be this engine's. */
    if (fstat(s->fd, &st) == 0) {
        uint64_t have = (uint64_t)st.st_size / s->slot_bytes;
        s->allocated = have > s->capacity ? s->capacity : (uint32_t)have;
    }
    *out = s;
    return 0;
}

/* fdatasync of the slab `fd` and the journal `journal_fd`: 0, or -errno naming the file. */
static int sync_fds(int fd, int journal_fd) {
    if (fdatasync(fd) != 0) return kvm_fail(errno, "offload: fdatasync of the slab failed: %s", strerror(errno));
    if (fdatasync(journal_fd) != 0) return kvm_fail(errno, "offload: fdatasync of the journal failed: %s", strerror(errno));
    return 0;
}

void kvm_slab_fit(kvm_slab *s) {
    struct stat st;
    if (s->read_only || fstat(s->fd, &st) != 0) return;
    uint64_t keep = (uint64_t)s->capacity * s->slot_bytes;
    if ((uint64_t)st.st_size > keep && ftruncate(s->fd, (off_t)keep) != 0) {
        /* kept at its size: only the disk space stays taken */
    }
}

void kvm_slab_close(kvm_slab *s) {
    if (!s) return;
    if (!s->read_only) sync_fds(s->fd, s->journal_fd);
    close_fd(s);
    close_journal(s);
    kvm_slab_journal_rewrite_abort(s);
    close_lock(s); /* last: the directory is free once the files are closed */
    free(s);
}

int kvm_slab_open_peer(const kvm_slab_config *cfg, kvm_slab **out) {
    if (!cfg || !out || !cfg->dir) return kvm_fail(EINVAL, "peer_offload_dirs: no directory given");
    if (kvm_slab_check_dir_length(cfg->dir, "a directory of peer_offload_dirs") != 0) return -EINVAL;
    if (cfg->slot_bytes <= KVM_SLOT_HEADER_BYTES || cfg->slot_bytes % 4096 != 0)
        return kvm_fail(EINVAL, "offload: slot of %llu bytes is not a multiple of 4096 above the header", (unsigned long long)cfg->slot_bytes);
    struct stat st;
    if (stat(cfg->dir, &st) != 0) return kvm_fail(errno, "peer offload dir '%s': %s", cfg->dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return kvm_fail(ENOTDIR, "peer offload dir '%s' is not a directory", cfg->dir);
    kvm_slab *s = calloc(1, sizeof *s);
    if (!s) return kvm_fail(ENOMEM, "offload: out of memory");
    s->read_only = 1;
    s->lock_fd = -1;
    s->lock_entry = s->fd_entry = s->journal_entry = s->rewrite_entry = -1;
    s->rewrite_fd = -1;
    s->journal_fd = -1;
    s->slot_bytes = cfg->slot_bytes;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" KVM_SLAB_FILE, cfg->dir);
    snprintf(s->journal_path, sizeof s->journal_path, "%s/" KVM_JOURNAL_FILE, cfg->dir);
    /* O_RDONLY, never O_CREAT, never flock: the owner keeps writing and holds its lock. */
    s->fd = cfg->force_buffered ? -1 : kvm_tier_file_open(path, O_RDONLY | O_DIRECT, 0, &s->fd_entry);
    if (s->fd >= 0) {
        s->direct = 1;
    } else if (cfg->force_buffered || s->fd == -EINVAL) {
        snprintf(s->fallback, sizeof s->fallback, "%s: O_DIRECT %s; using buffered I/O", path,
                 cfg->force_buffered ? "disabled by configuration" : "refused by the file system (EINVAL)");
        s->fd = kvm_tier_file_open(path, O_RDONLY, 0, &s->fd_entry);
    }
    if (s->fd >= 0) s->journal_fd = kvm_tier_file_open(s->journal_path, O_RDONLY, 0, &s->journal_entry);
    if (s->fd < 0 || s->journal_fd < 0) {
        int err = -(s->fd < 0 ? s->fd : s->journal_fd);
        const char *file = s->fd < 0 ? KVM_SLAB_FILE : KVM_JOURNAL_FILE;
        close_fd(s);
        free(s);
        if (err == ENOENT)
            return kvm_fail(ENOENT, "peer offload dir '%s' has no %s: no engine has used it as its offload_dir yet", cfg->dir, file);
        return -err; /* kvm_tier_file_open's error, naming the file and why */
    }
    if (fstat(s->fd, &st) == 0) {
        if ((uint64_t)st.st_size % s->slot_bytes != 0) {
            close_fd(s);
            close_journal(s);
            free(s);
            return kvm_fail(EINVAL, "peer offload dir '%s': its slab of %lld bytes is not made of %llu-byte slots: it was written by an engine of another shape (layers, block_tokens, token bytes)",
                            cfg->dir, (long long)st.st_size, (unsigned long long)cfg->slot_bytes);
        }
        uint64_t have = (uint64_t)st.st_size / s->slot_bytes;
        s->allocated = have > 0x7fffffffu ? 0x7fffffffu : (uint32_t)have;
    }
    s->capacity = s->allocated;
    *out = s;
    return 0;
}

/* The slab's path, beside the journal. */
static void slab_path(const kvm_slab *s, char *out, size_t size) { snprintf(out, size, "%.*s/" KVM_SLAB_FILE, dir_length(s), s->journal_path); }

/* Whether `path` names the file open as `fd` (same device and inode). */
static int names_open_file(const char *path, int fd, struct stat *open_st) {
    struct stat named;
    if (fstat(fd, open_st) != 0 || open_st->st_nlink == 0 || stat(path, &named) != 0) return 0;
    return named.st_dev == open_st->st_dev && named.st_ino == open_st->st_ino;
}

int kvm_slab_peer_refresh(kvm_slab *s, uint64_t *journal_bytes) {
    /* The path must still name the open journal: a directory moved aside and recreated (or a
     * symlink switched) leaves the old files linked elsewhere. */
    struct stat st;
    if (names_open_file(s->journal_path, s->journal_fd, &st)) {
        *journal_bytes = (uint64_t)st.st_size;
        return 0;
    }
    /* Renamed over (the owner compacted it at a restart) or removed: open the path again. The
     * slab must still be the one registered for I/O and the one its path names: a replaced
     * slab (directory recreated, or moved aside) is another file, which the caller opens anew
     * (kvm_slab_open_peer) and registers. */
    char slab[PATH_MAX];
    slab_path(s, slab, sizeof slab);
    struct stat slab_st;
    if (!names_open_file(slab, s->fd, &slab_st))
        return kvm_fail(ESTALE, "peer slab of '%s' was removed or replaced; its blocks are misses until the directory holds a tier again", s->journal_path);
    int entry;
    int fd = kvm_tier_file_open(s->journal_path, O_RDONLY, 0, &entry);
    if (fd == -ENOENT) return kvm_fail(ENOENT, "peer journal '%s': cannot reopen: %s", s->journal_path, strerror(ENOENT));
    if (fd < 0) return fd; /* a link or no regular file: kvm_tier_file_open's error says so */
    if (fstat(fd, &st) != 0) {
        int err = errno;
        kvm_fork_close_close(fd, entry);
        return kvm_fail(err, "peer journal '%s': fstat failed: %s", s->journal_path, strerror(err));
    }
    close_journal(s);
    s->journal_fd = fd;
    s->journal_entry = entry;
    *journal_bytes = (uint64_t)st.st_size;
    return 1;
}

int kvm_slab_fd(const kvm_slab *s) { return s->fd; }
int kvm_slab_direct(const kvm_slab *s) { return s->direct; }
const char *kvm_slab_fallback_reason(const kvm_slab *s) { return s->fallback; }
uint32_t kvm_slab_allocated(const kvm_slab *s) { return s->allocated; }
uint64_t kvm_slab_offset(const kvm_slab *s, uint32_t slot) { return (uint64_t)slot * s->slot_bytes; }

uint32_t kvm_slab_growable(const kvm_slab *s, const char **bound) {
    const char *why = "offload_bytes";
    uint64_t fit = s->capacity;
    uint64_t by_limit = kvm_file_size_limit() / s->slot_bytes;
    if (by_limit < fit) {
        fit = by_limit;
        why = "the process's file-size limit (RLIMIT_FSIZE)";
    }
    struct statvfs fs;
    /* A file system reporting no blocks at all (ramfs) has no size to be full of. */
    if (fstatvfs(s->fd, &fs) == 0 && fs.f_frsize > 0 && fs.f_blocks > 0) {
        /* g more slots leave free - g * slot_bytes, which must hold the journal's reserve for
         * allocated + g slots: g <= (free - reserve(allocated)) / (slot_bytes + per slot). */
        uint64_t free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
        uint64_t reserve = KVM_JOURNAL_RESERVE_BYTES + (uint64_t)s->allocated * KVM_JOURNAL_RESERVE_PER_SLOT;
        uint64_t by_disk = s->allocated + (free_bytes > reserve ? (free_bytes - reserve) / (s->slot_bytes + KVM_JOURNAL_RESERVE_PER_SLOT) : 0);
        if (by_disk < fit) {
            fit = by_disk;
            why = "the file system's free space less the journal's reserve (No space left on device)";
        }
    }
    if (bound) *bound = why;
    return fit > s->allocated ? (uint32_t)(fit - s->allocated) : 0;
}

/* Gives the slab the bytes [from, to): fallocate, or where the file system has none
 * (EOPNOTSUPP: ext3's files without extents, NFS before 4.2, many FUSE file systems) an
 * ftruncate that makes them a hole, whose blocks the slot writes allocate (logged once); a
 * full disk then fails those writes, an I/O error as any other. 0, or -1 with errno set. */
static int extend(kvm_slab *s, uint64_t from, uint64_t to) {
    int rc;
    do rc = fallocate(s->fd, 0, (off_t)from, (off_t)(to - from)); while (rc != 0 && errno == EINTR);
    if (rc == 0 || errno != EOPNOTSUPP) return rc;
    kvm_log_once(&logged_sparse, "offload slab in '%.*s': fallocate is not supported by the file system; the slab grows sparse "
                 "(ftruncate), its space taken as slots are written, so a full disk fails those writes instead of the growth",
                 dir_length(s), s->journal_path);
    return ftruncate(s->fd, (off_t)to);
}

int kvm_slab_grow(kvm_slab *s) {
    /* At most an extent, and no more than the bounds allow: past offload_bytes; past the
     * process's file-size limit, where the kernel would end the process (SIGXFSZ); past the
     * file system's free space, which a whole extent's fallocate failed on while the room
     * check counted the slots that fit. */
    const char *bound;
    uint32_t room = kvm_slab_growable(s, &bound);
    if (room == 0) return kvm_fail(ENOSPC, "offload tier full: the slab's %u slots are all in use and %s leaves no room for more", s->allocated, bound);
    uint32_t next = s->allocated + (room < s->extent_slots ? room : s->extent_slots);
    uint64_t from = (uint64_t)s->allocated * s->slot_bytes;
    int rc;
    for (;;) {
        rc = extend(s, from, (uint64_t)next * s->slot_bytes);
        /* Free space counts no file-system metadata, nor a quota: an exact fit may still be refused. */
        if (rc == 0 || (errno != ENOSPC && errno != EDQUOT) || next - s->allocated == 1) break;
        if (ftruncate(s->fd, (off_t)from) != 0) { /* the size only over-reports */ }
        next = s->allocated + (next - s->allocated) / 2;
    }
    if (rc != 0) {
        int cause = errno;
        int err = cause == EFBIG || cause == EDQUOT ? ENOSPC : cause;  /* a file-size limit or a quota is a full disk to the tier */
        /* Give back any part of the extent that was allocated. */
        if (ftruncate(s->fd, (off_t)from) != 0) { /* nothing more to do: the size only over-reports */ }
        return kvm_fail(err, "offload: preallocating slots %u..%u of the slab failed: %s", s->allocated, next - 1, strerror(cause));
    }
    s->allocated = next;
    return 0;
}

void kvm_slab_pin_files(const kvm_slab *s, kvm_slab_files *out) {
    kvm_fork_close_hold();
    int journal = fcntl(s->journal_fd, F_DUPFD_CLOEXEC, 0);
    int entry = journal >= 0 ? kvm_fork_close_add(journal) : -1;
    kvm_fork_close_release();
    *out = (kvm_slab_files){.slab_fd = s->fd, .journal_fd = journal >= 0 ? journal : s->journal_fd, .borrowed = journal < 0, .journal_entry = entry};
}

int kvm_slab_sync_files(kvm_slab_files *f) {
    int rc = sync_fds(f->slab_fd, f->journal_fd);
    if (!f->borrowed) kvm_fork_close_close(f->journal_fd, f->journal_entry);
    f->slab_fd = f->journal_fd = -1;
    return rc;
}

int kvm_slab_check_files(const kvm_slab *s) {
    /* Synced bytes a restart cannot find are not durable: the directory removed or moved, or a
     * file replaced, under the engine, which writes on into the files it holds open. */
    char slab[PATH_MAX];
    slab_path(s, slab, sizeof slab);
    struct stat st;
    const char *gone = !names_open_file(slab, s->fd, &st) ? slab : !names_open_file(s->journal_path, s->journal_fd, &st) ? s->journal_path : NULL;
    if (gone)
        return kvm_fail(ESTALE, "offload: '%s' is no longer the file this engine writes (offload_dir removed or moved, or the file "
                                "replaced): the tier goes on storing in the files it holds open, served until the engine is destroyed, "
                                "but a restart finds none of it", gone);
    return 0;
}

static uint64_t header_sum(const kvm_slot_header *h) {
    return kvm_checksum64(h, offsetof(kvm_slot_header, header_checksum), HEADER_SEED);
}

uint64_t kvm_slot_gather(void *payload, const void *const *sources, uint32_t count, uint64_t run_bytes) {
    return kvm_copy_checksum64(payload, sources, count, run_bytes, PAYLOAD_SEED);
}

uint64_t kvm_slot_payload_checksum(const void *payload, uint32_t payload_bytes) {
    return kvm_checksum64(payload, payload_bytes, PAYLOAD_SEED);
}

void kvm_slot_seal(void *slot_buf, uint32_t slot, uint64_t block_hash, uint64_t parent_hash, uint64_t generation,
                   uint32_t payload_bytes, const uint64_t *payload_checksum) {
    kvm_slot_header *h = slot_buf;
    memset(h, 0, KVM_SLOT_HEADER_BYTES);
    h->magic = KVM_SLOT_MAGIC;
    h->block_hash = block_hash;
    h->parent_hash = parent_hash;
    h->generation = generation;
    h->checksum = payload_checksum ? *payload_checksum
                                   : kvm_checksum64((const uint8_t *)slot_buf + KVM_SLOT_HEADER_BYTES, payload_bytes, PAYLOAD_SEED);
    h->payload_bytes = payload_bytes;
    h->slot = slot;
    h->header_checksum = header_sum(h);
}

uint64_t kvm_slot_checksum(const void *slot_buf) { return ((const kvm_slot_header *)slot_buf)->checksum; }

int kvm_slot_verify(const void *slot_buf, uint32_t slot, uint64_t block_hash, uint64_t generation, uint64_t checksum,
                    uint32_t payload_bytes) {
    const kvm_slot_header *h = slot_buf;
    if (h->magic != KVM_SLOT_MAGIC || h->header_checksum != header_sum(h))
        return kvm_fail(EBADMSG, "offload slot %u: header is torn or corrupt", slot);
    if (h->slot != slot || h->block_hash != block_hash || h->generation != generation || h->payload_bytes != payload_bytes ||
        h->checksum != checksum)
        return kvm_fail(EBADMSG, "offload slot %u: holds generation %llu of block %016llx, expected generation %llu of %016llx", slot,
                        (unsigned long long)h->generation, (unsigned long long)h->block_hash, (unsigned long long)generation,
                        (unsigned long long)block_hash);
    uint64_t actual = kvm_checksum64((const uint8_t *)slot_buf + KVM_SLOT_HEADER_BYTES, payload_bytes, PAYLOAD_SEED);
    if (actual != checksum) return kvm_fail(EBADMSG, "offload slot %u: payload checksum mismatch (torn or corrupt write)", slot);
    return 0;
}
