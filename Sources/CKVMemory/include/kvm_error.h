#pragma once

/* The calling thread's message for the last CKVMemory call that failed ("" if none).
 * Valid until the thread's next failing call. */
const char *kvm_error(void);

/* Records a message (printf-style) and returns -err, for `return kvm_fail(...)`. */
int kvm_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs "kvcache: <message>" on stderr once per process for each distinct `once` flag (a
 * fallback the caller should know about, e.g. small pages where huge ones were asked for). */
void kvm_log_once(int *once, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs "kvcache: <message>" on stderr (something an operator should know that is no error of
 * the call, e.g. journal records a restart could not use). */
void kvm_log(const char *message);
