#pragma once

/* <sys/mman.h> with the madvise advice the module uses that C library headers older than
 * Linux 5.14's lack. The kernel still decides: older kernels refuse it with EINVAL, which the
 * callers handle (a huge-page pool probes it at creation and falls back to small pages; a
 * pre-fault that fails only leaves pages to fault on first write). */
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
