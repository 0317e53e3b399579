/* The disk tier's I/O queue: io_uring with registered buffers and files, batched submission;
 * the thread-pool backend (io_threads.c) when io_uring cannot start. */
#include "kvm_io.h"
#include "io_backend.h"
#include "kvm_error.h"
#include "kvm_fork_close.h"

#include <errno.h>
#include <stdatomic.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kvm_io {
    int backend;
    int registered_buffers;
    uint32_t depth;
    uint32_t inflight;
    uint64_t fault_seen;
    uint64_t fault_after;
    uint32_t fault_ops;
    uint32_t failing_submits;     /* tests: io_uring_submit calls still to fail (-EAGAIN) */
    uint32_t n_files;
    int *files;
    int wake_fd;                  /* eventfd: kvm_io_wake ends a kvm_io_wait (io_uring backend) */
    int wake_entry;               /* wake_fd's entry among those a fork's child closes, or -1 */
    atomic_int unsent;            /* 1 while the ring holds entries a failed io_uring_enter left (set
                                   * and cleared by send_pending under the caller's lock; read by
                                   * kvm_io_wait, which may run without it) */
    struct io_uring ring;
    int ring_entry;               /* the ring's descriptor among those a fork's child closes (kvm_fork_close.h):
                                   * a child keeping the ring (its descriptor or its mappings) would keep
                                   * its registered files, and so the slab's I/O lock (kvm_slab_open), as
                                   * long as it lives; or -1 */
    kvm_io_threads *threads;
    char fallback[256];
};

static int logged_no_uring, logged_no_registration;

/* Unregisters and closes the ring (unmaps it, closes its descriptor) in one fork bracket
 * (kvm_fork_close.h): a fork in between would give its child the ring unregistered. */
static void exit_ring(kvm_io *io) {
    kvm_fork_close_hold();
    kvm_fork_close_remove(io->ring_entry);
    io_uring_queue_exit(&io->ring);
    kvm_fork_close_release();
}

static int start_uring(kvm_io *io, const kvm_io_config *cfg) {
    uint32_t entries = 1;
    while (entries < cfg->depth) entries <<= 1;
    /* IORING_SETUP_SUBMIT_ALL (Linux 5.18): an entry the kernel refuses at submission (it
     * completes with the error) does not stop it taking the ones after it. Older kernels refuse
     * the flag with -EINVAL; without it the rest stay in the ring, and send_pending hands them
     * over with its next io_uring_enter. */
    kvm_fork_close_hold(); /* no fork copies the ring before it is registered and not mapped in children */
    int rc = io_uring_queue_init(entries, &io->ring, IORING_SETUP_SUBMIT_ALL);
    if (rc == -EINVAL) rc = io_uring_queue_init(entries, &io->ring, 0);
    if (rc == 0) {
        /* A forked child gets neither the ring's mappings (which refer to its file as its
         * descriptor does) nor, once the child handler ran, its descriptor. Best effort: a
         * failed madvise only leaves the ring to such a child as before. */
        (void)io_uring_ring_dontfork(&io->ring);
        io->ring_entry = kvm_fork_close_add(io->ring.ring_fd);
    }
    kvm_fork_close_release();
    if (rc < 0) return rc;
    rc = io_uring_register_files(&io->ring, cfg->files, cfg->n_files);
    if (rc < 0) {
        exit_ring(io);
        return rc;
    }
    if (cfg->n_buffers > 0) {
        rc = io_uring_register_buffers(&io->ring, cfg->buffers, cfg->n_buffers);
        if (rc == 0) {
            io->registered_buffers = 1;
        } else {
            snprintf(io->fallback, sizeof io->fallback,
                     "io_uring_register_buffers failed (%s): buffers are pinned per request", strerror(-rc));
            kvm_log_once(&logged_no_registration, "%s", io->fallback);
        }
    }
    return 0;
}

int kvm_io_create(const kvm_io_config *cfg, kvm_io **out) {
    if (!cfg || !out || cfg->depth == 0 || cfg->depth > 4096 || cfg->n_files == 0 || !cfg->files)
        return kvm_fail(EINVAL, "kvm_io_create: depth must be 1..4096 and at least one file given");
    kvm_io *io = calloc(1, sizeof *io);
    int *files = malloc(cfg->n_files * sizeof *files);
    if (!io || !files) {
        free(io);
        free(files);
        return kvm_fail(ENOMEM, "kvm_io_create: out of memory");
    }
    memcpy(files, cfg->files, cfg->n_files * sizeof *files);
    io->files = files;
    io->wake_fd = io->wake_entry = io->ring_entry = -1;
    io->n_files = cfg->n_files;
    io->depth = cfg->depth;
    io->fault_after = cfg->fault_after;
    io->fault_ops = cfg->fault_ops;
    io->failing_submits = cfg->failing_submits;
    int rc = cfg->force_threads ? -EPERM : start_uring(io, cfg);
    if (rc == 0) {
        kvm_fork_close_hold();
        io->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        rc = io->wake_fd < 0 ? -errno : 0;
        if (rc == 0) io->wake_entry = kvm_fork_close_add(io->wake_fd);
        kvm_fork_close_release();
        if (rc < 0) {
            exit_ring(io);
            free(files);
            free(io);
            return kvm_fail(-rc, "kvm_io_create: eventfd failed: %s", strerror(-rc));
        }
        io->backend = KVM_IO_URING;
    } else {
        if (cfg->force_threads)
            snprintf(io->fallback, sizeof io->fallback, "io_uring disabled by configuration: using a pread/pwrite thread pool");
        else
            snprintf(io->fallback, sizeof io->fallback, "io_uring unavailable (%s): using a pread/pwrite thread pool", strerror(-rc));
        if (!cfg->force_threads) kvm_log_once(&logged_no_uring, "%s", io->fallback);
        rc = kvm_io_threads_create(cfg, &io->threads);
        if (rc < 0) {
            free(files);
            free(io);
            return rc;
        }
        io->backend = KVM_IO_THREADS;
    }
    *out = io;
    return 0;
}

void kvm_io_destroy(kvm_io *io) {
    if (!io) return;
    if (io->backend == KVM_IO_THREADS) kvm_io_threads_pause(io->threads, 0);  /* or the drain never ends */
    kvm_io_done done[64];
    while (io->inflight > 0) {
        if (kvm_io_reap(io, done, 64, 1, -1) < 0) break;
    }
    if (io->backend == KVM_IO_URING) {
        exit_ring(io);
        kvm_fork_close_close(io->wake_fd, io->wake_entry);
    } else {
        kvm_io_threads_destroy(io->threads);
    }
    free(io->files);
    free(io);
}

int kvm_io_replace_file(kvm_io *io, uint32_t index, int fd) {
    if (index >= io->n_files || fd < 0) return kvm_fail(EINVAL, "kvm_io_replace_file: file index %u out of range or fd %d invalid", index, fd);
    if (io->backend == KVM_IO_URING) {
        int rc = io_uring_register_files_update(&io->ring, index, &fd, 1);
        if (rc < 0) return kvm_fail(-rc, "kvm_io_replace_file: io_uring_register_files_update failed: %s", strerror(-rc));
    }
    io->files[index] = fd;
    return 0;
}

/* Hands the kernel the ring's entries it has not taken yet (a failed io_uring_enter leaves
 * them there: -EAGAIN or -ENOMEM short of memory, -EBUSY with completions backed up; one the
 * kernel refused at submission without IORING_SETUP_SUBMIT_ALL leaves those after it). Entries
 * still left are retried by the next submit or reap; `unsent` says so to kvm_io_wait, and the
 * first failure of a series also wakes a kvm_io_wait already sleeping (it may have started
 * before this call), whose caller then reaps, which hands them over again. Caller's lock. */
static void send_pending(kvm_io *io) {
    if (io_uring_sq_ready(&io->ring) > 0) {
        if (io->failing_submits > 0) {
            io->failing_submits--;
        } else {
            int rc;
            do rc = io_uring_submit(&io->ring); while (rc == -EINTR || (rc > 0 && io_uring_sq_ready(&io->ring) > 0));
        }
    }
    int left = io_uring_sq_ready(&io->ring) > 0;
    if (atomic_exchange(&io->unsent, left) == 0 && left) kvm_io_wake(io);
}

static int64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* True when this request is to fail by fault injection. */
static int injected_fault(kvm_io *io, uint16_t op) {
    if (!(io->fault_ops & (1u << op))) return 0;
    return io->fault_seen++ >= io->fault_after;
}

void kvm_io_set_faults(kvm_io *io, uint32_t fault_ops, uint64_t fault_after) {
    io->fault_ops = fault_ops;
    io->fault_after = fault_after;
    io->fault_seen = 0;
}

int kvm_io_submit(kvm_io *io, const kvm_io_req *reqs, uint32_t n) {
    uint32_t room = io->depth - io->inflight;
    if (n > room) n = room;
    for (uint32_t i = 0; i < n; i++) {
        if (reqs[i].file >= io->n_files) return kvm_fail(EINVAL, "kvm_io_submit: file index %u out of range", reqs[i].file);
        if (reqs[i].op > KVM_IO_WRITE)
            return kvm_fail(EINVAL, "kvm_io_submit: op %u is neither KVM_IO_READ nor KVM_IO_WRITE", reqs[i].op);
        if (reqs[i].tag >> 63)
            return kvm_fail(EINVAL, "kvm_io_submit: tag %#llx sets bit 63, which marks injected faults", (unsigned long long)reqs[i].tag);
    }
    if (io->backend == KVM_IO_THREADS) {
        for (uint32_t i = 0; i < n; i++) kvm_io_threads_push(io->threads, &reqs[i], io->files[reqs[i].file], injected_fault(io, reqs[i].op));
        io->inflight += n;
        return (int)n;
    }
    for (uint32_t i = 0; i < n; i++) {
        const kvm_io_req *r = &reqs[i];
        struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
        if (!sqe) {
            n = i;
            break;
        }
        if (injected_fault(io, r->op)) {
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data64(sqe, r->tag | (1ull << 63));  /* completes as -EIO in reap */
            continue;
        }
        int fixed = io->registered_buffers && r->buf_index >= 0;
        if (r->op == KVM_IO_WRITE) {
            if (fixed) io_uring_prep_write_fixed(sqe, r->file, r->buf, r->len, r->offset, r->buf_index);
            else io_uring_prep_write(sqe, r->file, r->buf, r->len, r->offset);
        } else {
            if (fixed) io_uring_prep_read_fixed(sqe, r->file, r->buf, r->len, r->offset, r->buf_index);
            else io_uring_prep_read(sqe, r->file, r->buf, r->len, r->offset);
        }
        sqe->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data64(sqe, r->tag);
    }
    if (n == 0) return 0;
    /* The entries are in the ring now (liburing published its tail): whatever io_uring_enter
     * answers, they go to the kernel, at the latest with the next one, and complete. So they
     * count as in flight and are accepted; a failed enter (-EAGAIN or -ENOMEM when the kernel
     * is short of memory, -EBUSY with completions backed up) is retried by the next submit or
     * reap (send_pending). Refusing them instead would let the caller reuse their buffers
     * while the kernel still reads or fills them, and see their completions twice. */
    io->inflight += n;
    send_pending(io);
    return (int)n;
}

int kvm_io_reap(kvm_io *io, kvm_io_done *out, uint32_t cap, uint32_t wait_for, int64_t timeout_us) {
    if (wait_for > io->inflight) wait_for = io->inflight;
    if (wait_for > cap) wait_for = cap;
    if (io->backend == KVM_IO_THREADS) {
        int got = kvm_io_threads_reap(io->threads, out, cap, wait_for, timeout_us);
        if (got > 0) io->inflight -= (uint32_t)got;
        return got;
    }
    uint32_t got = 0;
    int64_t deadline = timeout_us < 0 ? -1 : now_us() + timeout_us;  /* one limit for the whole call */
    send_pending(io);  /* every reap, wait_for 0 too: kvm_io_wait cannot hand entries over */
    while (got < cap) {
        struct io_uring_cqe *cqe = NULL;
        int rc = io_uring_peek_cqe(&io->ring, &cqe);
        if (rc == -EAGAIN || !cqe) {
            if (got >= wait_for) break;
            send_pending(io);
            int64_t wait = deadline < 0 ? -1 : deadline - now_us();
            if (deadline >= 0 && wait <= 0) break;
            /* Entries the kernel has not taken cannot complete: wait a millisecond at a time
             * and hand them over again. */
            if (io_uring_sq_ready(&io->ring) > 0 && (wait < 0 || wait > 1000)) wait = 1000;
            if (wait < 0) {
                rc = io_uring_wait_cqe(&io->ring, &cqe);
            } else {
                struct __kernel_timespec ts = {.tv_sec = wait / 1000000, .tv_nsec = (wait % 1000000) * 1000};
                rc = io_uring_wait_cqe_timeout(&io->ring, &cqe, &ts);
            }
            if (rc < 0 && rc != -ETIME && rc != -EINTR) {  /* a signal: wait on, to the same deadline */
                if (got > 0) break;  /* the completions taken are the caller's now: return them */
                return kvm_fail(-rc, "io_uring_wait_cqe failed: %s", strerror(-rc));
            }
            continue;
        }
        uint64_t tag = io_uring_cqe_get_data64(cqe);
        out[got].tag = tag & ~(1ull << 63);
        out[got].result = (tag >> 63) ? -EIO : cqe->res;
        io_uring_cqe_seen(&io->ring, cqe);
        got++;
        io->inflight--;
    }
    if (got > 0) send_pending(io);  /* -EBUSY (completions backed up) may have ended with these */
    return (int)got;
}

/* Polls the ring's file descriptor (readable while its completion queue holds an entry) and the
 * wake eventfd: reads neither ring index, so it is safe beside a concurrent submit or reap.
 * Entries left unsent cannot complete, and handing them over here would race that submit or
 * reap; so while there are any (`unsent`) it sleeps a millisecond at most and then returns 1,
 * and its caller's reap (with the lock) hands them over. A hand-over failing once it sleeps
 * wakes it through the eventfd (send_pending). */
int kvm_io_wait(kvm_io *io, int64_t timeout_us) {
    if (io->backend == KVM_IO_THREADS) return kvm_io_threads_wait(io->threads, timeout_us);
    enum { retry_us = 1000 };
    int capped = atomic_load(&io->unsent) && (timeout_us < 0 || timeout_us > retry_us);
    if (capped) timeout_us = retry_us;
    struct pollfd fds[2] = {{.fd = io->ring.ring_fd, .events = POLLIN}, {.fd = io->wake_fd, .events = POLLIN}};
    /* One deadline for the whole call: a signal (EINTR) resumes the wait for the time left, so
     * signals arriving faster than the timeout cannot keep it waiting for ever. */
    int64_t deadline = timeout_us < 0 ? -1 : now_us() + timeout_us;
    int rc;
    for (;;) {
        int64_t left = timeout_us < 0 ? -1 : deadline - now_us();
        if (timeout_us >= 0 && left < 0) left = 0;
        struct timespec ts = {.tv_sec = left / 1000000, .tv_nsec = (left % 1000000) * 1000};
        rc = ppoll(fds, 2, left < 0 ? NULL : &ts, NULL);
        if (rc >= 0 || errno != EINTR) break;
    }
    if (rc < 0) return kvm_fail(errno, "kvm_io_wait: ppoll failed: %s", strerror(errno));
    if (fds[1].revents & POLLIN) {
        uint64_t count;
        while (read(io->wake_fd, &count, sizeof count) < 0 && errno == EINTR) {}
    }
    return rc > 0 || capped;
}

void kvm_io_wake(kvm_io *io) {
    if (io->backend == KVM_IO_THREADS) {
        kvm_io_threads_wake(io->threads);
        return;
    }
    uint64_t one = 1;
    while (write(io->wake_fd, &one, sizeof one) < 0 && errno == EINTR) {}
}

int kvm_io_fail_submits(kvm_io *io, uint32_t n) {
    if (io->backend != KVM_IO_URING) return kvm_fail(ENOTSUP, "kvm_io_fail_submits: only the io_uring backend hands requests over");
    io->failing_submits = n;
    return 0;
}

int kvm_io_pause(kvm_io *io, int paused) {
    if (io->backend != KVM_IO_THREADS) return kvm_fail(ENOTSUP, "kvm_io_pause: only the thread backend can pause");
    kvm_io_threads_pause(io->threads, paused);
    return 0;
}

uint32_t kvm_io_ready(kvm_io *io) {
    return io->backend == KVM_IO_THREADS ? kvm_io_threads_ready(io->threads) : io_uring_cq_ready(&io->ring);
}

uint32_t kvm_io_inflight(const kvm_io *io) { return io->inflight; }
int kvm_io_backend(const kvm_io *io) { return io->backend; }
int kvm_io_registered_buffers(const kvm_io *io) { return io->registered_buffers; }
const char *kvm_io_fallback_reason(const kvm_io *io) { return io->fallback; }
