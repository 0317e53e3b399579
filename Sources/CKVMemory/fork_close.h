#pragma once

/* Descriptors a fork()'s child closes at once, so that a child that does not exec (and may
 * live long) keeps nothing they hold: the disk tier's locks sit on open file descriptions the
 * child shares, held until every reference to them goes: the directory's flock (its own
 * descriptor), and the slab's I/O lock (the I/O descriptor, and the io_uring ring whose
 * registered files refer to it). Before, the directory stayed locked after
 * kvc_engine_destroy for as long as such a child lived.
 *
 * A fixed table of KVM_FORK_CLOSE_SLOTS atomic entries and a pthread_atfork child handler,
 * installed by the first registration. No mutex: the handler runs in the child, a copy of one
 * thread of a maybe multi-threaded parent, where any mutex may be held for good; it only reads
 * the table and calls close() (async-signal-safe). A descriptor registered while the table is
 * full, or opened by another thread in the instant before its registration, stays in such a
 * child (until it exits or execs: the descriptors are O_CLOEXEC). Thread-safe. */
#define KVM_FORK_CLOSE_SLOTS 1024

/* Registers fd to be closed in every child forked from now on: the entry's index, for
 * kvm_fork_close_remove, or -1 when the table is full. O(KVM_FORK_CLOSE_SLOTS) at most. */
int kvm_fork_close_add(int fd);
/* Unregisters entry `index` (-1: nothing). Called before the descriptor is closed, so that no
 * child closes a number reused meanwhile. O(1). */
void kvm_fork_close_remove(int index);
