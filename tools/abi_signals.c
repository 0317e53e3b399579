/* A host that dlopens libkvcache.so after it started and keeps its fatal-signal dispositions.
 * The Swift runtime's initializer used to install its crash handler for SIGQUIT, SIGILL,
 * SIGTRAP, SIGABRT, SIGBUS, SIGFPE and SIGSEGV in every process loading the library: a
 * watchdog's `kill -ABRT` then printed a crash report and the process ran on; raise(SIGQUIT)
 * returned. Checks, after installing a SIGSEGV handler of its own and then loading the library:
 * a child killed by each of the other six signals from this process dies by that signal, a
 * child's raise(SIGQUIT) ends it, the six dispositions are SIG_DFL and the host's SIGSEGV
 * handler is still installed. With `backtrace` (run under SWIFT_BACKTRACE=enable=yes, the
 * opt-in): the runtime's handler stays on SIGABRT, and the host's on SIGSEGV.
 *
 *   tools/bin/abi_signals path/to/libkvcache.so [backtrace]
 *
 * Exit 0 when every check passed, 1 otherwise (each failure printed). */
#define _GNU_SOURCE /* sigaction, kill, setrlimit */
#include "kvcache.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "abi_signals: FAILED %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static void host_segv(int sig, siginfo_t *info, void *context) {
    (void)sig, (void)info, (void)context;
    _exit(99);
}

static void *handler_of(int sig) {
    struct sigaction current;
    sigaction(sig, NULL, &current);
    return (current.sa_flags & SA_SIGINFO) ? (void *)current.sa_sigaction : (void *)current.sa_handler;
}

/* Forks a child that waits (at most 5 s, then SIGALRM ends it), sends it `sig` from this
 * process, and returns the child's wait status. With `self`, the child raises it itself. */
static int child_status(int sig, int self) {
    pid_t child = fork();
    if (child == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        if (self) raise(sig);
        alarm(5);
        for (;;) pause();
    }
    if (!self) kill(child, sig);
    int status = 0;
    waitpid(child, &status, 0);
    return status;
}

static void describe(int status, char *out, size_t size) {
    if (WIFSIGNALED(status)) snprintf(out, size, "was killed by signal %d", WTERMSIG(status));
    else snprintf(out, size, "exited with status %d", WEXITSTATUS(status));
}

int main(int argc, char **argv) {
    int backtrace = argc == 3 && strcmp(argv[2], "backtrace") == 0;
    if (argc != 2 && !backtrace) {
        fprintf(stderr, "usage: %s path/to/libkvcache.so [backtrace]\n", argv[0]);
        return 2;
    }
    struct sigaction host = {0};
    host.sa_sigaction = host_segv;
    host.sa_flags = SA_SIGINFO;
    sigemptyset(&host.sa_mask);
    sigaction(SIGSEGV, &host, NULL);

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "abi_signals: dlopen: %s\n", dlerror());
        return 1;
    }
    unsigned (*abi_version)(void) = (unsigned (*)(void))dlsym(lib, "kvc_abi_version");
    CHECK(abi_version != NULL && abi_version() == KVC_ABI_VERSION, "kvc_abi_version");
    CHECK(handler_of(SIGSEGV) == (void *)host_segv, "the host's SIGSEGV handler was replaced");

    if (backtrace) {
        Dl_info info;
        void *abrt = handler_of(SIGABRT);
        CHECK(abrt != (void *)SIG_DFL && dladdr(abrt, &info) != 0 && strstr(info.dli_fname, "swift") != NULL,
              "SWIFT_BACKTRACE set: SIGABRT's handler is not the Swift runtime's");
    } else {
        const int fatal[] = {SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE};
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
            char seen[64];
            int status = child_status(fatal[i], 0);
            describe(status, seen, sizeof seen);
            CHECK(WIFSIGNALED(status) && WTERMSIG(status) == fatal[i],
                  "kill(child, %s): the child %s, not that signal", strsignal(fatal[i]), seen);
            CHECK(handler_of(fatal[i]) == (void *)SIG_DFL, "%s's disposition is not SIG_DFL",
                  strsignal(fatal[i]));
        }
        char seen[64];
        int status = child_status(SIGQUIT, 1);
        describe(status, seen, sizeof seen);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGQUIT,
              "raise(SIGQUIT) in a child: it %s, not by SIGQUIT", seen);
    }
    if (failures == 0) printf("abi_signals: OK (%s)\n", backtrace ? "SWIFT_BACKTRACE set: runtime handlers kept"
                                                                   : "host dispositions kept");
    return failures == 0 ? 0 : 1;
}
