#pragma once
#include <pthread.h>
#include <stdint.h>

/* The engine's lock: a mutex that counts the threads blocked waiting for it, so that a holder
 * running a long call in steps hands it to them between steps (kvm_lock_yield). An unlock
 * followed at once by a lock does not: the unlocking thread usually takes the mutex back
 * before a woken waiter runs (helper-165 measured trims holding it 0.5 s that way).
 * `waiters` and `handoffs` are touched only through the functions below (atomically).
 * Waits on a condition variable use `mutex` directly (kvm_lock_mutex); their re-locks are not
 * counted as waiters. Thread-safe. */
typedef struct kvm_lock {
    pthread_mutex_t mutex;
    uint32_t waiters;  /* threads blocked in kvm_lock_acquire */
    uint32_t handoffs; /* acquisitions by such threads since kvm_lock_init (wraps) */
} kvm_lock;

/* Makes *l an unlocked lock with no waiters and no handoffs counted (a default mutex). Call
 * once before any other function here; not thread-safe. */
void kvm_lock_init(kvm_lock *l);
/* Destroys the mutex of a lock no thread holds or waits for; *l must be initialised again
 * before it is used again. */
void kvm_lock_destroy(kvm_lock *l);

/* Takes the lock. Cost without contention: one trylock (as pthread_mutex_lock); a blocked
 * caller counts itself in `waiters` meanwhile. */
static inline void kvm_lock_acquire(kvm_lock *l) {
    if (pthread_mutex_trylock(&l->mutex) == 0) return;
    __atomic_add_fetch(&l->waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&l->mutex);
    __atomic_add_fetch(&l->handoffs, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&l->waiters, 1, __ATOMIC_SEQ_CST);
}

static inline void kvm_lock_release(kvm_lock *l) { pthread_mutex_unlock(&l->mutex); }

/* The mutex itself, for pthread_cond_wait and the like. */
static inline pthread_mutex_t *kvm_lock_mutex(kvm_lock *l) { return &l->mutex; }

/* Called holding the lock, returns holding it: when a thread is blocked in kvm_lock_acquire,
 * releases the lock until one such thread got it (yielding the CPU meanwhile), then takes it
 * back (behind that thread's call). Returns whether it let go. Cost without waiters: one
 * atomic load; with them, the waiter's call. */
int kvm_lock_yield(kvm_lock *l);
