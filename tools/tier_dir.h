/* tier_dir.h — the disk-tier scratch directory of the C test clients (abi_client, abi_stress,
 * abi_model): what an engine leaves in it, removed with it. */
#ifndef KVC_TOOLS_TIER_DIR_H
#define KVC_TOOLS_TIER_DIR_H

#include <stdio.h>
#include <unistd.h>

/* Removes a disk-tier directory and the files an engine keeps in it (slab, journal and the
 * tier's identity). */
static inline void remove_tier_dir(const char *dir) {
    static const char *const files[] = {"kvcache.slab", "kvcache.journal", "kvcache.identity"};
    char path[4096];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

#endif
