/* See heap.h. */
#include "common/heap.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define TRIM_THRESHOLD (256 << 20)
#define MMAP_THRESHOLD (4 << 20)

void fy_heap_keep_freed(void) {
  const char *t = getenv("GLIBC_TUNABLES");
  if (t && strstr(t, "glibc.malloc."))
    return;
  mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
  mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
}
