#include "kvm_error.h"
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char message[512];

const char *kvm_error(void) { return message; }

int kvm_fail(int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return err > 0 ? -err : err;
}

void kvm_log_once(int *once, const char *fmt, ...) {
    if (__atomic_exchange_n(once, 1, __ATOMIC_RELAXED)) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kvcache: %s\n", line);
}

void kvm_log(const char *message) { fprintf(stderr, "kvcache: %s\n", message); }
