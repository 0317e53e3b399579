#pragma once
#include <stdint.h>
#include <sys/uio.h>

/* An asynchronous I/O queue for the disk tier: io_uring through liburing, or a small thread
 * pool doing pread/pwrite when io_uring is unavailable (or forced).
 *
 * io_uring backend: a ring of `depth` entries with the caller's buffers and files registered
 * (IORING_REGISTER_BUFFERS / _FILES), so each request skips the per-I/O page pinning and fd
 * lookup; kvm_io_submit queues a whole batch with one io_uring_enter. Thread backend: `threads`
 * workers take requests from a bounded queue and post completions back.
 *
 * Either way at most `depth` requests are in flight; kvm_io_submit accepts what fits and says
 * how many. A completion carries the caller's tag and the byte count or -errno; a short
 * transfer is reported as it is (the caller decides). Fallbacks are logged once per process on
 * stderr with the reason, and kvm_io_fallback_reason() returns it.
 *
 * Fault injection (tests, and operators rehearsing failures): with fault_ops set (bit
 * 1 << KVM_IO_READ, 1 << KVM_IO_WRITE), every request of those operations after the first
 * fault_after of them completes with -EIO without touching the file.
 *
 * Not thread-safe: one caller at a time (the engine holds its lock), with one exception:
 * kvm_io_wait and kvm_io_wake may run on other threads meanwhile, so that a caller can wait for
 * the device without holding the lock the others need. The thread pool's workers are internal. */
typedef struct kvm_io kvm_io;

enum { KVM_IO_READ = 0, KVM_IO_WRITE = 1 };
enum { KVM_IO_URING = 0, KVM_IO_THREADS = 1 };

typedef struct kvm_io_config {
    uint32_t depth;               /* requests in flight at most, 1..4096 */
    uint32_t threads;             /* thread backend workers; 0 = 4 */
    int32_t force_threads;        /* 1: use the thread backend even when io_uring works */
    uint32_t n_buffers;           /* buffers to register (may be 0) */
    const struct iovec *buffers;
    uint32_t n_files;             /* files to register, addressed by index in requests, >= 1 */
    const int *files;
    uint32_t fault_ops;           /* 0: no faults; else a mask of 1 << KVM_IO_READ / _WRITE */
    uint64_t fault_after;         /* requests of those operations that still succeed */
    uint32_t failing_submits;     /* tests: io_uring only: this many hand-overs to the kernel fail
                                   * (-EAGAIN, as when it is short of memory), the entries left
                                   * in the ring for the next submit or reap to send */
} kvm_io_config;

typedef struct kvm_io_req {
    uint64_t tag;                 /* returned with the completion; bit 63 must be 0 (the ring marks injected faults with it) */
    void *buf;                    /* aligned for O_DIRECT files */
    uint64_t offset;
    uint32_t len;
    uint16_t op;                  /* KVM_IO_READ or KVM_IO_WRITE */
    uint16_t file;                /* index into config.files */
    int32_t buf_index;            /* registered buffer holding buf, or -1 */
} kvm_io_req;

typedef struct kvm_io_done {
    uint64_t tag;
    int64_t result;               /* bytes transferred, or -errno */
} kvm_io_done;

/* Creates the queue; io_uring first unless forced, then threads. -errno with a message when
 * neither can start. Cost: one ring setup and buffer registration (pins the buffers). */
int kvm_io_create(const kvm_io_config *cfg, kvm_io **out);
/* Waits for every request in flight, then releases the queue. NULL: no-op. */
void kvm_io_destroy(kvm_io *io);

/* Queues up to n requests (stops at the depth limit) and starts them with one system call.
 * Returns how many were accepted (0..n), or -EINVAL for a bad request (nothing queued): a file
 * index past config.n_files, a tag with bit 63 set, or an op other than KVM_IO_READ and
 * KVM_IO_WRITE (the same rule on both backends). An
 * accepted request always completes: on io_uring, one the kernel did not take at once (a
 * failed io_uring_enter: -EAGAIN, -ENOMEM, -EBUSY) stays in the ring and is handed over again
 * by the next kvm_io_submit or kvm_io_reap, so its buffer stays the kernel's until reaped. */
int kvm_io_submit(kvm_io *io, const kvm_io_req *reqs, uint32_t n);
/* Moves up to cap completions into out. Waits until at least min(wait_for, in flight) are
 * available or timeout_us passes, counted from the call (timeout_us < 0: no limit; wait_for
 * 0: never waits). Every call, wait_for 0 included, first hands over requests the kernel has
 * not taken (see kvm_io_submit), retrying each millisecond while it waits and once more after
 * taking completions. A signal does not end the wait (it goes on to the same deadline).
 * Returns the count, or -errno when the wait fails before any completion was taken (one that
 * fails after some were returns those). */
int kvm_io_reap(kvm_io *io, kvm_io_done *out, uint32_t cap, uint32_t wait_for, int64_t timeout_us);

/* Waits until a completion can be reaped, kvm_io_wake is called (or was, since the last
 * kvm_io_wait returned), or timeout_us passes (< 0: no limit), counted from the call: a signal
 * neither ends the wait nor restarts its timeout (it goes on to the same deadline). Consumes no
 * completion: the caller reaps afterwards, with its lock. May run while another thread submits
 * or reaps on the same queue; at most one thread at a time may wait here. io_uring: it hands
 * nothing over (that would race a concurrent submit or reap), so while requests a failed
 * hand-over left wait to be sent it returns 1 within a millisecond (at once when the failure
 * happens while it waits) and the caller's kvm_io_reap sends them: never an untimed sleep on
 * requests that cannot complete. Returns 1 (woken, a completion is there (possibly already
 * taken by a concurrent reap), or a hand-over is due), 0 (timed out) or -errno. */
int kvm_io_wait(kvm_io *io, int64_t timeout_us);
/* Ends the kvm_io_wait in progress, or the next one, at once. Any thread, any time. */
void kvm_io_wake(kvm_io *io);
/* Tests: while paused, the thread backend starts no request (requests stay in flight), so a
 * test can hold I/O pending deterministically. -ENOTSUP on the io_uring backend. */
int kvm_io_pause(kvm_io *io, int paused);
/* Replaces the fault injection of kvm_io_config (fault_ops, fault_after) from the next request
 * kvm_io_submit takes on: fault_ops 0 fails nothing; fault_after counts the requests of those
 * operations from this call. Requests already submitted keep their outcome. Tests and operators
 * rehearsing a device that fails and recovers. Same caller rules as kvm_io_submit. O(1). */
void kvm_io_set_faults(kvm_io *io, uint32_t fault_ops, uint64_t fault_after);
/* Tests: the next n hand-overs to the kernel fail, as kvm_io_config.failing_submits (replacing
 * what is left of it), so that a test can leave entries unsent at a chosen point. Returns 0, or
 * -ENOTSUP on the thread backend (which hands nothing over). Same caller rules as
 * kvm_io_submit. O(1). */
int kvm_io_fail_submits(kvm_io *io, uint32_t n);
/* Tests: completions posted and not yet reaped (kvm_io_reap would take them without waiting). */
uint32_t kvm_io_ready(kvm_io *io);

/* Makes file `index` (of config.files) refer to `fd` from the next request on: io_uring
 * updates its registered file table (IORING_REGISTER_FILES_UPDATE), the thread backend its
 * array. The caller must have no request in flight on the old file (the thread backend's
 * workers use the descriptor a request was submitted with) and closes the old descriptor
 * afterwards. 0, or -errno with a message. Cost: one system call on io_uring. */
int kvm_io_replace_file(kvm_io *io, uint32_t index, int fd);

/* Requests submitted and not yet reaped. */
uint32_t kvm_io_inflight(const kvm_io *io);
/* KVM_IO_URING or KVM_IO_THREADS. */
int kvm_io_backend(const kvm_io *io);
/* 1 when the io_uring backend runs with registered buffers. */
int kvm_io_registered_buffers(const kvm_io *io);
/* Why this queue runs a fallback (thread backend, or unregistered buffers), or "". */
const char *kvm_io_fallback_reason(const kvm_io *io);

/* Opens (creating, mode 0644) `path` read-write with O_DIRECT, or buffered when the file
 * system refuses O_DIRECT (EINVAL); *direct says which. Returns the fd or -errno with a message. */
int kvm_io_open_file(const char *path, int *direct);
/* Preallocates the first `bytes` of fd (fallocate). 0 or -errno with a message; -EFBIG when
 * `bytes` passes the process's file-size limit (kvm_file_size_limit). */
int kvm_io_preallocate(int fd, uint64_t bytes);
/* The process's file-size limit (RLIMIT_FSIZE's soft limit) in bytes; UINT64_MAX when there is
 * none. A write or fallocate that would end past it raises SIGXFSZ, whose default action ends
 * the process, so every file this module grows checks the end it grows to against this first
 * and reports the limit as a status instead. One getrlimit. */
uint64_t kvm_file_size_limit(void);

/* Maps `bytes` (rounded up to 2 MiB) of zeroed, populated memory aligned to 2 MiB, asking for
 * transparent huge pages: an I/O buffer of few physical segments (a 2 MiB request in 4 KiB
 * pages is 512 segments, more than a virtio or NVMe queue takes in one request). A fork's
 * child does not inherit the mapping (MADV_DONTFORK: registered, pinned buffers would be
 * copied into it at the fork). With `numa_node` >= 0 the memory is bound to that node
 * (MPOL_BIND, before the pages are touched), as the page pool binds the K/V; -1: the default
 * policy. NULL with a message on failure, errno set: EINVAL for 0 bytes or a size that does
 * not round up within 64 bits, or a node libnuma does not know, else mmap's or mbind's.
 * Release with kvm_io_free_buffers(p, bytes). */
void *kvm_io_alloc_buffers(uint64_t bytes, int32_t numa_node);
/* As kvm_io_alloc_buffers, but only reserved: nothing is touched (each page is faulted in, from
 * `numa_node` when >= 0, on its first use), no huge-page advice, and a fork's child inherits
 * the mapping copy-on-write (it is never registered for I/O). For buffers the engine may never
 * use, such as episodic offload's open records. Release with kvm_io_free_buffers(p, bytes). */
void *kvm_io_reserve_buffers(uint64_t bytes, int32_t numa_node);
void kvm_io_free_buffers(void *p, uint64_t bytes);
