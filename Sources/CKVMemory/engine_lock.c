#include "kvm_lock.h"

#include <sched.h>

void kvm_lock_init(kvm_lock *l) {
    pthread_mutex_init(&l->mutex, NULL);
    l->waiters = 0;
    l->handoffs = 0;
}

void kvm_lock_destroy(kvm_lock *l) { pthread_mutex_destroy(&l->mutex); }

int kvm_lock_yield(kvm_lock *l) {
    if (__atomic_load_n(&l->waiters, __ATOMIC_SEQ_CST) == 0) return 0;
    uint32_t before = __atomic_load_n(&l->handoffs, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&l->mutex);
    /* A counted waiter leaves only by taking the lock, which counts a handoff. */
    while (__atomic_load_n(&l->handoffs, __ATOMIC_SEQ_CST) == before) sched_yield();
    pthread_mutex_lock(&l->mutex);
    return 1;
}
