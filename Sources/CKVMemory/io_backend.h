/* Internal: the two backends behind kvm_io (io_ring.c, io_threads.c). */
#pragma once
#include "kvm_io.h"

typedef struct kvm_io_threads kvm_io_threads;

/* The pread/pwrite thread pool of cfg->depth requests: 0, or -errno with a message. Destroy
 * lets the threads run every queued request, then joins them. */
int kvm_io_threads_create(const kvm_io_config *cfg, kvm_io_threads **out);
void kvm_io_threads_destroy(kvm_io_threads *t);
/* Queues one request (the caller keeps in-flight <= depth, so it always fits). */
void kvm_io_threads_push(kvm_io_threads *t, const kvm_io_req *req, int fd, int fail);
/* Takes up to cap completions, waiting as kvm_io_reap describes. */
int kvm_io_threads_reap(kvm_io_threads *t, kvm_io_done *out, uint32_t cap, uint32_t wait_for, int64_t timeout_us);
/* kvm_io_wait / kvm_io_wake / kvm_io_pause for the thread backend. */
int kvm_io_threads_wait(kvm_io_threads *t, int64_t timeout_us);
void kvm_io_threads_wake(kvm_io_threads *t);
void kvm_io_threads_pause(kvm_io_threads *t, int paused);
/* kvm_io_ready for the thread backend. */
uint32_t kvm_io_threads_ready(kvm_io_threads *t);
