/* A host that loads libkvcache.so as a plugin: dlopen, a failing call, dlclose, 1100 times
 * (a process has 1024 thread-specific-data keys). Each cycle's failure must leave its message
 * in kvc_last_error, and the host must still create a key of its own at the end. Before
 * libkvcache.so was linked with -z nodelete, each load created keys that no unload deleted
 * (two per cycle): from cycle 512 on the messages were lost ("") and the host's
 * pthread_key_create failed with EAGAIN.
 *
 *   tools/bin/abi_dlopen path/to/libkvcache.so
 *
 * Exit 0 when every check passed, 1 otherwise (each failure printed). */
#include "kvcache.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

enum { CYCLES = 1100 };

typedef kvc_status (*create_fn)(const kvc_config *, kvc_engine **);
typedef const char *(*last_error_fn)(void);

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s path/to/libkvcache.so\n", argv[0]);
        return 2;
    }
    int lost = 0;
    for (int i = 0; i < CYCLES; i++) {
        void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            printf("abi_dlopen: FAILED: dlopen in cycle %d: %s\n", i, dlerror());
            return 1;
        }
        create_fn create = (create_fn)(uintptr_t)dlsym(lib, "kvc_engine_create");
        last_error_fn last_error = (last_error_fn)(uintptr_t)dlsym(lib, "kvc_last_error");
        if (!create || !last_error) {
            printf("abi_dlopen: FAILED: dlsym in cycle %d: %s\n", i, dlerror());
            return 1;
        }
        kvc_engine *e = NULL;
        kvc_status rc = create(NULL, &e);
        if (rc != KVC_ERR_INVALID_ARGUMENT || !strstr(last_error(), "kvc_engine_create")) {
            if (lost++ == 0) printf("abi_dlopen: FAILED: cycle %d: status %d, message '%s'\n", i, rc, last_error());
        }
        if (dlclose(lib) != 0) {
            printf("abi_dlopen: FAILED: dlclose in cycle %d: %s\n", i, dlerror());
            return 1;
        }
    }
    if (lost) printf("abi_dlopen: FAILED: %d of %d cycles lost kvc_last_error's message\n", lost, CYCLES);
    pthread_key_t key;
    int rc = pthread_key_create(&key, NULL);
    if (rc != 0) printf("abi_dlopen: FAILED: the host's pthread_key_create after %d cycles: %s\n", CYCLES, strerror(rc));
    else pthread_key_delete(key);
    if (lost || rc != 0) return 1;
    printf("abi_dlopen: %d dlopen/dlclose cycles: every failure kept its message, the host still creates keys\n", CYCLES);
    return 0;
}
