#pragma once
#include <stdint.h>

/* The disk tier's files in one directory: a slab file of fixed-size slots and an append-only
 * journal saying which slot holds which block.
 *
 * Slab (`kvcache.slab`): slot s is slot_bytes at offset s * slot_bytes; the first
 * KVM_SLOT_HEADER_BYTES hold a kvm_slot_header, the payload follows. It is opened O_DIRECT
 * (no page-cache double buffering); when the file system refuses O_DIRECT (EINVAL) it is
 * opened buffered, logged once. Space is preallocated (fallocate) in extents of
 * extent_slots slots as slots are first needed, up to max_bytes, so a full disk shows up as
 * -ENOSPC from kvm_slab_grow while everything already written stays valid.
 *
 * Journal (`kvcache.journal`): fixed 64-byte records, each with its own checksum, appended
 * with one write() per batch after the data they describe completed. The latest valid record
 * per slot wins; a torn or corrupt record is skipped (the slot's previous record then wins,
 * whose slot bytes kvm_slot_verify checks as any other's), and part of a record left at the
 * end by a short write is cut off before the next batch is appended. The tier writes a FREED record before it
 * rewrites a slot whose block was journaled, so a crash leaves no STORED record over bytes
 * that were being replaced. A restarted engine replays it to find its
 * blocks again; kvm_slot_verify then rejects any slot whose bytes do not match its record
 * (torn or corrupt): such a slot is a miss, never served.
 *
 * Not thread-safe. */
typedef struct kvm_slab kvm_slab;

/* The tier's files in its directory (DiskTierFiles lists them with the identity's): the slab
 * of slots, its journal, and the journal a compaction writes and renames over it. */
#define KVM_SLAB_FILE "kvcache.slab"
#define KVM_JOURNAL_FILE "kvcache.journal"
#define KVM_JOURNAL_REWRITE_FILE "kvcache.journal.new" /* a literal: Swift imports no concatenation */
#define KVM_SLOT_HEADER_BYTES 4096u
#define KVM_SLOT_MAGIC 0x31544f4c53564b4bull  /* "KKVSLOT1" */
#define KVM_JOURNAL_MAGIC 0x324c524au /* "JRL2": records with a block fingerprint (tier format 3) */

enum { KVM_JOURNAL_STORED = 1, KVM_JOURNAL_FREED = 2 };

/* At the start of every written slot. */
typedef struct kvm_slot_header {
    uint64_t magic;          /* KVM_SLOT_MAGIC */
    uint64_t block_hash;     /* 0 for a swapped-out block that is not in the prefix index */
    uint64_t parent_hash;
    uint64_t generation;     /* unique per write, increasing */
    uint64_t checksum;       /* kvm_checksum64 of the payload */
    uint32_t payload_bytes;
    uint32_t slot;
    uint64_t header_checksum; /* kvm_checksum64 of the fields above */
} kvm_slot_header;

/* One journal record: 64 bytes. Format 3 (identity version 3, 2026-11-25) narrowed the magic
 * to 32 bits and dropped the reserved word to carry the block's fingerprint; the block hash and
 * parent hash stay at byte offsets 16 and 24. */
typedef struct kvm_journal_record {
    uint32_t magic;          /* KVM_JOURNAL_MAGIC */
    uint32_t slot;
    uint32_t kind;           /* KVM_JOURNAL_STORED or KVM_JOURNAL_FREED */
    uint32_t payload_bytes;
    uint64_t block_hash;
    uint64_t parent_hash;
    uint64_t generation;
    uint64_t checksum;       /* the payload checksum of the slot's header */
    uint64_t fingerprint;    /* the block's keyed fingerprint (BlockFingerprint), 0 if unknown */
    uint64_t record_checksum; /* kvm_checksum64 of the 56 bytes above */
} kvm_journal_record;

typedef struct kvm_slab_config {
    const char *dir;         /* must exist and be writable */
    uint64_t slot_bytes;     /* a multiple of 4096, > KVM_SLOT_HEADER_BYTES */
    uint64_t max_bytes;      /* file size limit; at least one slot */
    uint32_t extent_slots;   /* slots preallocated per fallocate; 0 = 64 */
    int32_t force_buffered;  /* 1: do not try O_DIRECT */
} kvm_slab_config;

/* 0 when every tier file of `dir` has a path shorter than PATH_MAX (`dir` at most 4074 bytes);
 * else -EINVAL with a message naming `what`, the length and the limit: a name cut short would
 * open some other file. kvm_slab_open and kvm_slab_open_peer check it first; the engine checks
 * peers before it opens anything. O(length). */
int kvm_slab_check_dir_length(const char *dir, const char *what);
/* What kvm_tier_file_open checks of an open tier file besides that it is a regular file (a
 * FIFO, device or directory planted under a tier file's name is refused). */
enum {
    KVM_TIER_FILE_OWN = 1,    /* owned by this process's effective user, with one link: the engine's own */
    KVM_TIER_FILE_SECRET = 2, /* no permission for group or others (the identity: its key is a secret) */
    KVM_TIER_FILE_SEALED = 4, /* not writable by group or others (a peer's identity: its key is trusted) */
};
/* Opens `path`, one of a disk tier's files, with `flags` | O_NOFOLLOW | O_CLOEXEC (mode 0600
 * when O_CREAT creates it), registered for closing in a forked child (kvm_fork_close_open: its
 * entry in *entry, -1 on failure; close it with kvm_fork_close_close), and checks the open
 * file: regular, and `checks`. It is opened O_NONBLOCK, cleared once the file is found regular
 * unless `flags` has it: a FIFO planted there is refused at once, where a blocking open would
 * wait for a writer inside the fork bracket (every fork() of the process with it). A tier's
 * directory may be shared (a sticky /tmp, a group's directory, a peer's on a shared file
 * system): a file there may have been planted by another user, as a link to a file elsewhere
 * (which the engine would overwrite) or with bytes or a key of its choosing. With O_CREAT
 * and KVM_TIER_FILE_OWN the file is the engine's to write: one with permission for group or
 * others (an older build created them 0644) is narrowed to 0600 (fchmod). The descriptor, or
 * -errno with the error set naming the file and what is wrong: -ELOOP a symbolic link, -EPERM
 * a file that fails a check (closed), -errno from open (-ENOENT: none there). Cost: an open
 * and an fstat. */
int kvm_tier_file_open(const char *path, int flags, int checks, int *entry);
/* Opens (or creates) the slab and journal in cfg->dir and locks the slab file (flock, exclusive)
 * for as long as it is open; then takes the lock of its I/O descriptor (an open-file-description
 * lock that goes only with the last reference to it, io_uring's included), waiting up to 60 s
 * for the I/O an engine that ended (killed, or closed moments ago) still has queued on the
 * slab, so that none of it lands on slots written after this open. Both files are opened by
 * kvm_tier_file_open (KVM_TIER_FILE_OWN: 0600, this user's, no link). -EINVAL (bad sizes,
 * max_bytes below one slot), -EPERM when cfg->dir is writable by every user without the
 * sticky bit (any of them could rename, remove or replace the tier's files under the engine),
 * -EBUSY when another open slab (this process's or another's) holds the directory, or when
 * that I/O has not ended in 60 s, -errno with the path and reason when a file cannot be
 * opened or is refused (kvm_tier_file_open). */
int kvm_slab_open(const kvm_slab_config *cfg, kvm_slab **out);
/* Cuts the slab file to max_bytes when an earlier run of a larger tier (or of slots of another
 * size) left it longer: the slots past it go (the journal's replay forgets their blocks, and
 * drops their records should this cut be all a crash leaves). kvm_slab_open does not cut, so
 * that an engine refused after it (a directory of another model or shape) changes nothing:
 * call this once the directory is known to be this engine's. A failed cut keeps the file at
 * its size (only its disk space stays taken). No-op on a peer. */
void kvm_slab_fit(kvm_slab *s);
/* Opens another engine's tier in cfg->dir for reading only (a peer): kvcache.slab O_RDONLY
 * (O_DIRECT unless cfg->force_buffered or the file system refuses it) and kvcache.journal
 * O_RDONLY, each through kvm_tier_file_open (no symbolic link, a regular file; the owner may
 * be another user). Never creates, writes or locks anything there (the owner holds its flock
 * and keeps writing). Only cfg->dir, slot_bytes and force_buffered are used. -ENOENT (the directory or
 * its files do not exist: no engine has used it yet), -ENOTDIR, -EINVAL when the slab's size is
 * not a whole number of slot_bytes slots (written by an engine of another shape), -errno. */
int kvm_slab_open_peer(const kvm_slab_config *cfg, kvm_slab **out);
/* A peer's journal, for tailing: one fstat of the open journal and one stat of its path. 0
 * with *journal_bytes its size when it is still the file at its path; when it was renamed
 * over or removed (st_nlink 0: the owner compacted it, at a restart or while it runs) or its
 * path names another file (the directory moved aside and recreated, a symlink switched),
 * opens the path again and returns 1 with the new file's size (replay it from offset 0).
 * -ESTALE when the slab itself was removed or replaced, or its path names another file (this
 * engine's I/O queue holds the old file: open the peer anew), -errno when the path cannot be
 * opened. */
int kvm_slab_peer_refresh(kvm_slab *s, uint64_t *journal_bytes);
/* fdatasyncs (not a peer's) and closes its files. NULL: no-op. */
void kvm_slab_close(kvm_slab *s);

/* The slab file's descriptor (owned by the slab). */
int kvm_slab_fd(const kvm_slab *s);
/* 1 when the slab is open O_DIRECT. */
int kvm_slab_direct(const kvm_slab *s);
/* Why O_DIRECT is off, or "". */
const char *kvm_slab_fallback_reason(const kvm_slab *s);
/* Slots preallocated so far. */
uint32_t kvm_slab_allocated(const kvm_slab *s);
/* Byte offset of `slot` in the slab file. */
uint64_t kvm_slab_offset(const kvm_slab *s, uint32_t slot);

/* Free space the slab's growth leaves to the journal: KVM_JOURNAL_RESERVE_BYTES plus
 * KVM_JOURNAL_RESERVE_PER_SLOT (4 records) per slot of the slab grown (3 % of an 8 KiB slot,
 * less of larger ones), so that a slab that filled its file system still leaves room for its
 * journal: the tier compacts it once it passes KVM_JOURNAL_RESERVE_BYTES plus 3 records per
 * slot (DiskTier), writing the compacted copy (one record per slot at most) beside it. A
 * bound, not a guarantee: other writers may take that space, and the journal passes the
 * mark by up to a batch of records before it is compacted; an append that fails then is
 * counted and tried again (see kvm_slab_journal_append's callers). */
#define KVM_JOURNAL_RESERVE_BYTES 65536u
#define KVM_JOURNAL_RESERVE_PER_SLOT 256u

/* Slots kvm_slab_grow can still add, in total: up to max_bytes, the process's file-size limit
 * and the file system's free space less the journal's reserve (fstatvfs; an upper bound, as
 * other writers may take that space first; not a bound where the file system reports no
 * blocks at all, as ramfs does: it has no size to be full of). `bound`, when not NULL, receives which of the
 * three is nearest, in words. Cost: one getrlimit and one fstatvfs. */
uint32_t kvm_slab_growable(const kvm_slab *s, const char **bound);

/* Preallocates the next extent (fallocate): extent_slots, or fewer when a bound of
 * kvm_slab_growable is nearer (max_bytes, the process's file-size limit, the file system's
 * free space), halved while the file system still refuses it with ENOSPC or EDQUOT (free
 * space counts no metadata, nor a quota). Where the file system has no fallocate
 * (EOPNOTSUPP: ext3's files without extents, NFS before 4.2, many FUSE file systems) the
 * extent is a hole made by ftruncate, its blocks taken as slots are written (a full disk then
 * fails those writes, reported as any write failure), logged once on stderr. -ENOSPC when no
 * slot fits (a file-size limit or a quota counts as a full disk); the slab is unchanged on
 * failure. */
int kvm_slab_grow(kvm_slab *s);

/* Appends n records (their magic and record_checksum are filled in here), after cutting off
 * part of a record a short write left at the end (an fstat, and an ftruncate when needed):
 * one write, more only when one is short. -errno of the write that failed (then part of a
 * record may remain at the end: the next append cuts it off, a replay ignores it); -EFBIG,
 * writing nothing, when the records would pass the process's file-size limit
 * (kvm_file_size_limit). A compaction's add writes its records the same way. */
int kvm_slab_journal_append(kvm_slab *s, kvm_journal_record *records, uint32_t n);
/* Reads up to cap records starting at byte from_byte (a multiple of 64) into out: returns how
 * many leading ones are complete and valid (a partial or torn record ends the run; it is
 * read again by a later call once it is whole), or -errno. One pread. */
int64_t kvm_slab_journal_read(kvm_slab *s, uint64_t from_byte, kvm_journal_record *out, uint32_t cap);
/* Generations a record may carry: below 2^63. An engine counts one per slot write (2^63 take
 * centuries), so a record at or past it, its checksum valid, is not one of its records (forged,
 * or foreign); the replay skips it, so the count it resumes from fits its int64_t result and
 * can go on. */
#define KVM_JOURNAL_GENERATION_LIMIT (1ull << 63)
/* What a replay could not use: whole records that are torn or corrupt (each skipped, the
 * replay goes on past it), the bytes of a partial record at the journal's end (a torn tail: a
 * crash or a short write in the middle of an append; 0 when it ends on a record boundary),
 * valid records of a generation at or past KVM_JOURNAL_GENERATION_LIMIT, and valid records of
 * slots at or past `slots` (a tier reopened smaller). */
typedef struct kvm_journal_skipped {
    uint64_t unreadable;
    uint64_t torn_tail_bytes;
    uint64_t generation;
    uint64_t outside;
} kvm_journal_skipped;
/* Replays the journal: latest[slot] receives the last usable record of each slot below
 * `slots` (magic 0 when none); *skipped counts what it could not use. Returns the highest
 * generation among the usable records (below KVM_JOURNAL_GENERATION_LIMIT), or -errno. */
int64_t kvm_slab_journal_replay(kvm_slab *s, kvm_journal_record *latest, uint32_t slots, kvm_journal_skipped *skipped);
/* Compaction: a new journal written beside the old (`kvcache.journal.new`) and renamed over
 * it. begin creates the file anew (closing any compaction not committed; whatever is at its
 * name, left by a process that ended in the middle or planted, is removed first, and the file
 * is created exclusively, 0600, so nothing is written through a link); add seals (magic,
 * checksum) and appends n records to it; commit fsyncs it, renames it over the journal (whose
 * descriptor it then becomes: nothing is opened again) and fsyncs the directory; abort closes
 * and removes it. -errno, with a message naming strerror(errno), when a step fails; the slab
 * stays usable either way: until the rename the old journal stays (a failed commit aborts),
 * after it the new one is the journal, and commit returns 1 when only the directory's fsync
 * failed (a crash may bring back the old journal, valid too). Cost: a write per add, two
 * fsyncs per commit. */
int kvm_slab_journal_rewrite_begin(kvm_slab *s);
int kvm_slab_journal_rewrite_add(kvm_slab *s, kvm_journal_record *records, uint32_t n);
int kvm_slab_journal_rewrite_commit(kvm_slab *s);
void kvm_slab_journal_rewrite_abort(kvm_slab *s);
/* The journal's size in bytes (an fstat; 0 when it fails). */
uint64_t kvm_slab_journal_bytes(const kvm_slab *s);
/* fsyncs the directory holding `path`, so that a rename into it survives a crash: 0, or -errno
 * with kvm_error() naming the directory. One open and one fsync. */
int kvm_sync_parent(const char *path);
/* A slab's files pinned for a sync without the engine's lock (kvc_engine_sync): the slab's
 * own I/O descriptor, which stays open as long as the slab (a sync cannot outlive the engine),
 * and a duplicate of the journal's, which a compaction replaces and closes meanwhile (registered
 * among the descriptors a fork's child closes, kvm_fork_close.h, as every descriptor a slab
 * opens is). The slab's is not duplicated: one descriptor fewer to make and register. */
typedef struct kvm_slab_files {
    int slab_fd;
    int journal_fd;
    /* 1: no descriptor was left to duplicate the journal's (EMFILE), so journal_fd is the
     * slab's own, which a compaction may close: sync under the engine's lock. */
    int borrowed;
    /* The duplicate's entry in the fork-close table, or -1. */
    int journal_entry;
} kvm_slab_files;
/* Pins `s`'s files into `out` (one dup; under the engine's lock). When the dup fails (the
 * process at its descriptor limit) `out` borrows the journal's own descriptor instead
 * (`borrowed`), so that a sync still works, under the lock. Never fails. */
void kvm_slab_pin_files(const kvm_slab *s, kvm_slab_files *out);
/* fdatasync of the pinned slab and journal, then closes the journal's duplicate (also when
 * one fails): 0, or -errno with kvm_error() naming the file. Needs no lock unless borrowed.
 * Cost: two fdatasyncs. */
int kvm_slab_sync_files(kvm_slab_files *f);
/* Checks that slab and journal are still the files at their paths (fstat's link count, stat's
 * device and inode): -ESTALE with a message naming the file when one is not (offload_dir
 * removed or moved, or the file replaced, under the engine), as a restart would not find what
 * a sync made durable; the slab stays usable, writing into the files it holds open. 0, or
 * -ESTALE. Under the engine's lock. Cost: two fstats and two stats. */
int kvm_slab_check_files(const kvm_slab *s);
/* fsyncs the journal's directory (kvm_sync_parent): what makes a compaction's rename durable,
 * again after a commit that returned 1. 0, or -errno with kvm_error() naming the directory.
 * Safe without the engine's lock (it reads only the journal's path). */
int kvm_slab_sync_journal_dir(kvm_slab *s);
/* Tests: the journal directory's fsyncs (kvm_slab_sync_journal_dir, a commit's included) fail
 * with EIO once `after` more have succeeded (0: the next one); < 0 (the default): never. */
void kvm_slab_fail_dir_syncs(kvm_slab *s, int64_t after);

/* A seeded 64-bit checksum of len bytes (4 independent multiply-fold lanes over 64-byte
 * stripes, each stripe keyed by its position, MurmurHash3's finalizer). Not cryptographic;
 * detects torn, corrupted and reordered data. Its values are part of the slab's format
 * (tier format 2, TierIdentity). Cost: one 64x64->128 multiply per 16 bytes. */
uint64_t kvm_checksum64(const void *data, uint64_t len, uint64_t seed);
/* Copies `count` runs of run_bytes, sources[i] to dst + i * run_bytes, and returns
 * kvm_checksum64(dst, count * run_bytes, seed). When run_bytes is a multiple of 64 each word
 * is loaded once, checksummed and stored (~20 % less time than a memcpy and a checksum of
 * the copy for 8 runs of 32 KiB from memory not in cache); otherwise it is those two. */
uint64_t kvm_copy_checksum64(void *dst, const void *const *sources, uint32_t count, uint64_t run_bytes, uint64_t seed);

/* Copies `count` runs of run_bytes to `payload` (a slot buffer's bytes after its header), back
 * to back, as kvm_copy_checksum64; returns the payload's checksum for kvm_slot_seal. */
uint64_t kvm_slot_gather(void *payload, const void *const *sources, uint32_t count, uint64_t run_bytes);
/* The checksum kvm_slot_seal records for a payload of payload_bytes (a copy made some other
 * way than kvm_slot_gather: computed beside it, outside any lock, and passed to the seal). */
uint64_t kvm_slot_payload_checksum(const void *payload, uint32_t payload_bytes);
/* Fills the header at the start of `slot_buf` for a payload of payload_bytes that follows it.
 * payload_checksum: the payload's checksum when its gather computed it (kvm_slot_gather), or
 * NULL to compute it here (a pass over the payload). */
void kvm_slot_seal(void *slot_buf, uint32_t slot, uint64_t block_hash, uint64_t parent_hash,
                   uint64_t generation, uint32_t payload_bytes, const uint64_t *payload_checksum);
/* Checks a slot read back against what its record says: magic, header checksum, slot,
 * hash, generation, length and payload checksum. 0, or -EBADMSG with a message. */
int kvm_slot_verify(const void *slot_buf, uint32_t slot, uint64_t block_hash, uint64_t generation,
                    uint64_t checksum, uint32_t payload_bytes);
/* The payload checksum recorded in a sealed header. */
uint64_t kvm_slot_checksum(const void *slot_buf);
