#pragma once

#include <sys/types.h>

/* Descriptors a fork()'s child closes at once, so that a child that does not exec (and may
 * live long) keeps nothing they hold: the disk tier's locks sit on open file descriptions the
 * child shares, held until every reference to them goes: the directory's flock (its own
 * descriptor), and the slab's I/O lock (the I/O descriptor, and the io_uring ring whose
 * registered files refer to it). Before, the directory stayed locked after
 * kvc_engine_destroy for as long as such a child lived.
 *
 * A list of tables of KVM_FORK_CLOSE_SEGMENT atomic entries, a table added when every entry
 * is taken and never freed, and a pthread_atfork child handler, installed by the first
 * registration. No mutex: the handler runs in the child, a copy of one thread of a maybe
 * multi-threaded parent, where any mutex may be held for good; it only reads the tables and
 * calls close() (async-signal-safe). A descriptor is made and registered inside
 * kvm_fork_close_hold/release (kvm_fork_close_open does both), and unregistered and closed
 * inside another (kvm_fork_close_close), which fork()'s prepare handler waits for and which
 * wait for the fork's parent handler, so that no fork copies the descriptor table while a
 * registered descriptor is open and not in the table (fork() copies that table before the
 * handlers of the child run, while other threads run on). Before, a fork in the instant
 * between another thread's open and its registration gave the child a descriptor it never
 * closed (the directory's lock, if it was the flock's, held for the child's life); until
 * 2026-11-25 so did one between a removal and its close (a review forked workers beside an
 * engine's create and destroy: 12 of 20 held a slab, journal or ring; re-creates were
 * refused "in use by another engine"; every grandchild of a fork beside a sync loop kept the
 * sync's journal copy). A descriptor whose registration failed (no memory for another
 * table) stays in such a child (until it exits or execs: the descriptors are O_CLOEXEC). Before, one table
 * of 1024 entries held the descriptors of 341 engines with disk tiers (3 each), and the 342nd
 * engine's directory stayed locked in such a child. Thread-safe. */
#define KVM_FORK_CLOSE_SEGMENT 1024

/* Fork generations, counted by the same child handler: 0 in a process until it forks; in a
 * child forked after the handler was installed, its parent's generation + 1. An object made
 * at generation g was inherited through fork() where kvm_fork_generation() != g: an engine
 * refuses calls there and its destroy only unmaps and closes (the page pool does not cut its
 * memory file, which the parent still uses). */
extern unsigned kvm_fork_generation_value;
/* Installs the child handler (once, as kvm_fork_close_add does) and returns the current
 * generation: call it when making an object that must know whether it was inherited. */
unsigned kvm_fork_watch(void);
/* The current generation: one relaxed load, for hot paths. Counts forks only once
 * kvm_fork_watch or kvm_fork_close_add ran in this process or an ancestor. */
static inline unsigned kvm_fork_generation(void) { return __atomic_load_n(&kvm_fork_generation_value, __ATOMIC_RELAXED); }

/* Registers fd to be closed in every child forked from now on: the entry's index, for
 * kvm_fork_close_remove, or -1 when another table cannot be allocated. O(descriptors
 * registered) at most. */
int kvm_fork_close_add(int fd);
/* Unregisters entry `index` (-1: nothing). Called before the descriptor is closed, so that no
 * child closes a number reused meanwhile, and inside the same kvm_fork_close_hold/release as
 * that close (kvm_fork_close_close does both), so that no child gets it open and unregistered.
 * O(index / KVM_FORK_CLOSE_SEGMENT). */
void kvm_fork_close_remove(int index);
/* Brackets the making of a descriptor (open, dup, eventfd, a ring) and its kvm_fork_close_add,
 * and its kvm_fork_close_remove and its close: a fork() in another thread waits for release
 * (its prepare handler takes the other side of a read-write lock, until its parent handler),
 * and a hold waits for a fork in progress, so its child gets the descriptor registered or not
 * at all. Nothing between them may fork or wait for a thread that forks; brackets do not nest.
 * Costs an uncontended lock and unlock; never taken per token (opens and closes only). */
void kvm_fork_close_hold(void);
void kvm_fork_close_release(void);
/* open(path, flags | O_CLOEXEC, mode) registered in the same bracket: the descriptor, or -1
 * with errno set (then *entry is -1); its entry in *entry, for kvm_fork_close_close. */
int kvm_fork_close_open(const char *path, int flags, mode_t mode, int *entry);
/* kvm_fork_close_remove(entry), then close(fd), in one kvm_fork_close_hold/release (a fork
 * in another thread waits for the close: a close that writes back, as on NFS, delays it). */
void kvm_fork_close_close(int fd, int entry);
/* Tests: hook(fd) runs in every kvm_fork_close_remove from now on, just after fd's entry left
 * the table and before its owner closes fd (NULL: none, the default), so that a test can hold
 * a close path open there and fork from another thread. Process-wide: exit tests only. */
void kvm_fork_close_on_remove(void (*hook)(int fd));
