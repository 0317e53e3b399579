/* tier_dir.h — the disk-tier scratch directory of the C test clients (abi_client, abi_stress,
 * abi_model): what an engine leaves in it, removed with it. */
#ifndef KVC_TOOLS_TIER_DIR_H
#define KVC_TOOLS_TIER_DIR_H

#include <stdio.h>
#include <unistd.h>

/* Removes a disk-tier directory and the two files an engine keeps in it (slab and journal). */
static inline void remove_tier_dir(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/kvcache.slab", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/kvcache.journal", dir);
    unlink(path);
    rmdir(dir);
}

#endif
