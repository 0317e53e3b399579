#pragma once

/* The calling thread's message for the last CKVMemory call that failed ("" if none).
 * Valid until the thread's next failing call. */
const char *kvm_error(void);

/* Records a message (printf-style) and returns -err, for `return kvm_fail(...)`. */
int kvm_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
