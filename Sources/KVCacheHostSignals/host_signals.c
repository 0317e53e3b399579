/*
 * Gives the host back its fatal-signal dispositions when libkvcache.so loads.
 *
 * The Swift runtime's initializer installs its crash handler (the backtracer) for SIGQUIT,
 * SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE and SIGSEGV, each still at SIG_DFL, in whatever
 * process loads it. In a C or Python server that is not the library's to decide: a watchdog's
 * `kill -ABRT` (or -SEGV, -BUS, -ILL, or raise(SIGQUIT)) then prints a crash report and the
 * process keeps running instead of dying (swiftlang/swift PR #89461). This constructor, linked
 * only into the `kvcache` dynamic product (not the CLI, not the tests, which keep Swift
 * backtraces), puts each of those signals back to SIG_DFL when its current handler lies in the
 * Swift runtime's image, unless SWIFT_BACKTRACE is set in the environment (the documented
 * opt-in: SWIFT_BACKTRACE=enable=yes keeps the runtime's handlers). A handler of any other
 * image (the host's own, or a library's, whenever installed) is left alone.
 *
 * Order: the runtime's handlers are installed by libswiftCore.so's initializer, which the
 * dynamic loader runs before this one (libkvcache.so depends on it), whether the library is
 * linked at start-up or dlopen'ed later (checked by tools/abi_client.c, linked, and
 * tools/abi_signals.c, which dlopens it after installing a SIGSEGV handler of its own).
 * Built with -static-stdlib the runtime is inside this library and its initializer runs
 * after this one (link order: .init_array lists this object before libswiftCore.a's
 * Backtrace.cpp.o), so this undoes nothing there; but that runtime finds no swift-backtrace
 * beside it and installs no handler unless SWIFT_BACKTRACE names one (checked 2026-11-25,
 * Swift 6.3.1: no handler after loading, the host's kept). A process whose
 * Swift runtime was already loaded (a Swift host) loses the runtime's handlers too unless it
 * sets SWIFT_BACKTRACE. Not thread-safe against another thread changing these dispositions
 * during the load (a handler installed between the query and the reset by another image
 * is not the runtime's and so is not reset, but one the runtime installs then could stay).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>

/* A function of the Swift runtime: its image is the runtime's (libswiftCore.so, or this
 * library itself when linked with -static-stdlib). Declared here only to take its address. */
extern void *swift_retain(void *object);

/* The signals the runtime's crash handler catches (a sigaction query after loading shows
 * these seven). */
static const int swift_crash_signals[] = {SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV};

/* The base address of the image holding `address`, or NULL if none does. */
static void *image_of(void *address) {
    Dl_info info;
    return dladdr(address, &info) != 0 ? info.dli_fbase : NULL;
}

__attribute__((constructor)) static void kvc_restore_host_signal_dispositions(void) {
    if (getenv("SWIFT_BACKTRACE") != NULL) return;
    void *runtime = image_of((void *)swift_retain);
    if (runtime == NULL) return;
    for (size_t i = 0; i < sizeof swift_crash_signals / sizeof swift_crash_signals[0]; i++) {
        struct sigaction current;
        if (sigaction(swift_crash_signals[i], NULL, &current) != 0) continue;
        void *handler = (current.sa_flags & SA_SIGINFO) ? (void *)current.sa_sigaction
                                                         : (void *)current.sa_handler;
        if (handler == (void *)SIG_DFL || handler == (void *)SIG_IGN) continue;
        if (image_of(handler) != runtime) continue;
        struct sigaction dfl = {0};
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(swift_crash_signals[i], &dfl, NULL);
    }
}
