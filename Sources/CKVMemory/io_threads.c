/* The disk tier's fallback backend: a few threads doing pread/pwrite from a bounded queue,
 * for kernels or sandboxes without io_uring. Requests and completions are fixed arrays sized
 * by the queue depth (the caller never has more than depth in flight). */
#include "io_backend.h"
#include "kvm_error.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct job {
    kvm_io_req req;
    int fd;
    int fail;
} job;

struct kvm_io_threads {
    pthread_mutex_t lock;
    pthread_cond_t work;      /* a job was queued, or stop */
    pthread_cond_t done;      /* a completion was posted */
    uint32_t depth;
    job *jobs;                /* ring of depth */
    uint32_t job_head, job_count;
    kvm_io_done *completions; /* ring of depth */
    uint32_t done_head, done_count;
    int stop;
    int paused;               /* tests: workers start no job */
    int woken;                /* kvm_io_threads_wake since the last wait */
    uint32_t n_threads;
    pthread_t *threads;
};

static int64_t transfer(const job *j) {
    uint8_t *p = j->req.buf;
    uint64_t left = j->req.len, off = j->req.offset;
    while (left > 0) {
        ssize_t n = j->req.op == KVM_IO_WRITE ? pwrite(j->fd, p, left, (off_t)off) : pread(j->fd, p, left, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) break;  /* end of file: a short read */
        p += n;
        off += (uint64_t)n;
        left -= (uint64_t)n;
    }
    return (int64_t)(j->req.len - left);
}

static void *worker(void *arg) {
    kvm_io_threads *t = arg;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        while ((t->job_count == 0 || t->paused) && !t->stop) pthread_cond_wait(&t->work, &t->lock);
        if (t->job_count == 0 && t->stop) break;
        job j = t->jobs[t->job_head];
        t->job_head = (t->job_head + 1) % t->depth;
        t->job_count--;
        pthread_mutex_unlock(&t->lock);
        int64_t result = j.fail ? -EIO : transfer(&j);
        pthread_mutex_lock(&t->lock);
        t->completions[(t->done_head + t->done_count) % t->depth] = (kvm_io_done){.tag = j.req.tag, .result = result};
        t->done_count++;
        pthread_cond_broadcast(&t->done);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int kvm_io_threads_create(const kvm_io_config *cfg, kvm_io_threads **out) {
    kvm_io_threads *t = calloc(1, sizeof *t);
    if (!t) return kvm_fail(ENOMEM, "thread backend: out of memory");
    t->depth = cfg->depth;
    t->n_threads = cfg->threads ? cfg->threads : 4;
    t->jobs = calloc(t->depth, sizeof *t->jobs);
    t->completions = calloc(t->depth, sizeof *t->completions);
    t->threads = calloc(t->n_threads, sizeof *t->threads);
    if (!t->jobs || !t->completions || !t->threads) {
        free(t->jobs);
        free(t->completions);
        free(t->threads);
        free(t);
        return kvm_fail(ENOMEM, "thread backend: out of memory");
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->work, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->done, &attr);
    pthread_condattr_destroy(&attr);
    for (uint32_t i = 0; i < t->n_threads; i++) {
        int rc = pthread_create(&t->threads[i], NULL, worker, t);
        if (rc != 0) {
            t->n_threads = i;
            kvm_io_threads_destroy(t);
            /* ENOMEM, whatever pthread_create said (EAGAIN: the thread limit, or no memory
             * for a stack of RLIMIT_STACK): a process limit, which the engine reports as out of
             * memory, not a failing device. */
            return kvm_fail(ENOMEM, "thread backend: pthread_create failed: %s (errno %d: the process's thread limit, or the memory for a thread stack of RLIMIT_STACK)", strerror(rc), rc);
        }
    }
    *out = t;
    return 0;
}

void kvm_io_threads_destroy(kvm_io_threads *t) {
    pthread_mutex_lock(&t->lock);
    t->stop = 1;
    pthread_cond_broadcast(&t->work);
    pthread_mutex_unlock(&t->lock);
    for (uint32_t i = 0; i < t->n_threads; i++) pthread_join(t->threads[i], NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->work);
    pthread_cond_destroy(&t->done);
    free(t->jobs);
    free(t->completions);
    free(t->threads);
    free(t);
}

void kvm_io_threads_push(kvm_io_threads *t, const kvm_io_req *req, int fd, int fail) {
    pthread_mutex_lock(&t->lock);
    t->jobs[(t->job_head + t->job_count) % t->depth] = (job){.req = *req, .fd = fd, .fail = fail};
    t->job_count++;
    pthread_cond_signal(&t->work);
    pthread_mutex_unlock(&t->lock);
}

/* An absolute CLOCK_MONOTONIC deadline timeout_us from now (meaningless when < 0). */
static struct timespec deadline_after(int64_t timeout_us) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_us >= 0) {
        deadline.tv_sec += timeout_us / 1000000;
        deadline.tv_nsec += (timeout_us % 1000000) * 1000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
    return deadline;
}

int kvm_io_threads_wait(kvm_io_threads *t, int64_t timeout_us) {
    struct timespec deadline = deadline_after(timeout_us);
    pthread_mutex_lock(&t->lock);
    int woken = 1;
    while (t->done_count == 0 && !t->woken) {
        int rc = timeout_us < 0 ? pthread_cond_wait(&t->done, &t->lock) : pthread_cond_timedwait(&t->done, &t->lock, &deadline);
        if (rc == ETIMEDOUT) {
            woken = t->done_count > 0 || t->woken;
            break;
        }
    }
    t->woken = 0;
    pthread_mutex_unlock(&t->lock);
    return woken;
}

void kvm_io_threads_wake(kvm_io_threads *t) {
    pthread_mutex_lock(&t->lock);
    t->woken = 1;
    pthread_cond_broadcast(&t->done);
    pthread_mutex_unlock(&t->lock);
}

void kvm_io_threads_pause(kvm_io_threads *t, int paused) {
    pthread_mutex_lock(&t->lock);
    t->paused = paused;
    pthread_cond_broadcast(&t->work);
    pthread_mutex_unlock(&t->lock);
}

int kvm_io_threads_reap(kvm_io_threads *t, kvm_io_done *out, uint32_t cap, uint32_t wait_for, int64_t timeout_us) {
    struct timespec deadline = deadline_after(timeout_us);
    pthread_mutex_lock(&t->lock);
    while (t->done_count < wait_for) {
        int rc = timeout_us < 0 ? pthread_cond_wait(&t->done, &t->lock) : pthread_cond_timedwait(&t->done, &t->lock, &deadline);
        if (rc == ETIMEDOUT) break;
    }
    uint32_t got = 0;
    while (got < cap && t->done_count > 0) {
        out[got++] = t->completions[t->done_head];
        t->done_head = (t->done_head + 1) % t->depth;
        t->done_count--;
    }
    pthread_mutex_unlock(&t->lock);
    return (int)got;
}

uint32_t kvm_io_threads_ready(kvm_io_threads *t) {
    pthread_mutex_lock(&t->lock);
    uint32_t n = t->done_count;
    pthread_mutex_unlock(&t->lock);
    return n;
}
