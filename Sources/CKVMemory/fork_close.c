/* Descriptors a fork's child closes (kvm_fork_close.h). */
#include "kvm_fork_close.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* Per entry the descriptor + 1, or 0 when free (so a zeroed table is empty). */
typedef struct segment {
    atomic_int entries[KVM_FORK_CLOSE_SEGMENT];
    struct segment *_Atomic next;
} segment;

static segment first;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

unsigned kvm_fork_generation_value;

/* Tests: kvm_fork_close_on_remove's hook, or NULL. */
static void (*_Atomic removed_hook)(int fd);

/* Held shared from a descriptor's creation to its registration and from its removal to its
 * close (kvm_fork_close_hold), and exclusively by fork()'s prepare handler to its parent
 * handler (the whole fork syscall), so no fork copies a descriptor in either gap. */
static pthread_rwlock_t creating = PTHREAD_RWLOCK_INITIALIZER;

static void before_fork(void) { pthread_rwlock_wrlock(&creating); }
static void after_fork_in_parent(void) { pthread_rwlock_unlock(&creating); }

static void close_in_child(void) {
    /* Made anew, not unlocked: the child's one thread has another thread id than the one that
     * took it in the parent, which glibc's unlock would not recognise as the writer. */
    creating = (pthread_rwlock_t)PTHREAD_RWLOCK_INITIALIZER;
    __atomic_add_fetch(&kvm_fork_generation_value, 1, __ATOMIC_RELAXED);
    for (segment *s = &first; s; s = atomic_load_explicit(&s->next, memory_order_acquire))
        for (int i = 0; i < KVM_FORK_CLOSE_SEGMENT; i++) {
            int entry = atomic_exchange_explicit(&s->entries[i], 0, memory_order_relaxed);
            if (entry > 0) close(entry - 1);
        }
}

/* pthread_atfork fails only without memory: then children keep the descriptors, as before. */
static void install(void) { (void)pthread_atfork(before_fork, after_fork_in_parent, close_in_child); }

void kvm_fork_close_hold(void) {
    pthread_once(&installed, install);
    pthread_rwlock_rdlock(&creating);
}

void kvm_fork_close_release(void) { pthread_rwlock_unlock(&creating); }

int kvm_fork_close_open(const char *path, int flags, mode_t mode, int *entry) {
    kvm_fork_close_hold();
    int fd = open(path, flags | O_CLOEXEC, mode);
    *entry = fd >= 0 ? kvm_fork_close_add(fd) : -1;
    kvm_fork_close_release();
    return fd;
}

void kvm_fork_close_close(int fd, int entry) {
    kvm_fork_close_hold();
    kvm_fork_close_remove(entry);
    close(fd);
    kvm_fork_close_release();
}

unsigned kvm_fork_watch(void) {
    pthread_once(&installed, install);
    return kvm_fork_generation();
}

int kvm_fork_close_add(int fd) {
    pthread_once(&installed, install);
    for (segment *s = &first;; ) {
        for (int i = 0; i < KVM_FORK_CLOSE_SEGMENT; i++) {
            int expected = 0;
            if (atomic_compare_exchange_strong(&s->entries[i], &expected, fd + 1)) {
                int index = i;
                for (segment *t = &first; t != s; t = atomic_load(&t->next)) index += KVM_FORK_CLOSE_SEGMENT;
                return index;
            }
        }
        segment *next = atomic_load(&s->next);
        if (!next) {
            segment *fresh = calloc(1, sizeof *fresh);
            if (!fresh) return -1;
            /* Another thread may have linked one meanwhile: then use its. */
            if (atomic_compare_exchange_strong(&s->next, &next, fresh)) next = fresh;
            else free(fresh);
        }
        s = next;
    }
}

void kvm_fork_close_remove(int index) {
    if (index < 0) return;
    segment *s = &first;
    for (; index >= KVM_FORK_CLOSE_SEGMENT; index -= KVM_FORK_CLOSE_SEGMENT) s = atomic_load(&s->next);
    int entry = atomic_exchange(&s->entries[index], 0);
    void (*hook)(int) = atomic_load_explicit(&removed_hook, memory_order_relaxed);
    if (hook && entry > 0) hook(entry - 1);
}

void kvm_fork_close_on_remove(void (*hook)(int fd)) { atomic_store(&removed_hook, hook); }
