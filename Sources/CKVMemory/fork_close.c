/* Descriptors a fork's child closes (fork_close.h). */
#include "fork_close.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

/* Per entry the descriptor + 1, or 0 when free (so the zeroed table is empty). */
static atomic_int entries[KVM_FORK_CLOSE_SLOTS];
static pthread_once_t installed = PTHREAD_ONCE_INIT;

static void close_in_child(void) {
    for (int i = 0; i < KVM_FORK_CLOSE_SLOTS; i++) {
        int entry = atomic_exchange_explicit(&entries[i], 0, memory_order_relaxed);
        if (entry > 0) close(entry - 1);
    }
}

/* pthread_atfork fails only without memory: then children keep the descriptors, as before. */
static void install(void) { (void)pthread_atfork(NULL, NULL, close_in_child); }

int kvm_fork_close_add(int fd) {
    pthread_once(&installed, install);
    for (int i = 0; i < KVM_FORK_CLOSE_SLOTS; i++) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&entries[i], &expected, fd + 1)) return i;
    }
    return -1;
}

void kvm_fork_close_remove(int index) {
    if (index >= 0) atomic_store(&entries[index], 0);
}
