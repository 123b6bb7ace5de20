/* fy_heap_keep_freed: large blocks come from the heap and freed memory stays
 * in it; an operator's GLIBC_TUNABLES wins. glibc's allocator only: under
 * AddressSanitizer (its own allocator) the test skips itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "common/heap.h"

#if defined(__SANITIZE_ADDRESS__)
#define FY_OWN_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FY_OWN_ALLOCATOR 1
#endif
#endif

static void test_keeps_freed_memory(void **state) {
  (void)state;
#ifdef FY_OWN_ALLOCATOR
  skip();
#endif
  /* The operator's choice stands: glibc's defaults serve 1 MiB by mmap. */
  setenv("GLIBC_TUNABLES", "glibc.malloc.check=0", 1);
  fy_heap_keep_freed();
  size_t mmapped = mallinfo2().hblks;
  char *a = malloc(1 << 20);
  assert_non_null(a);
  memset(a, 1, 1 << 20);
  assert_int_equal(mallinfo2().hblks, mmapped + 1);

  unsetenv("GLIBC_TUNABLES");
  fy_heap_keep_freed();
  char *b = malloc(2 << 20);
  assert_non_null(b);
  memset(b, 2, 2 << 20);
  assert_int_equal(mallinfo2().hblks, mmapped + 1); /* from the heap */
  free(b);
  assert_true(mallinfo2().keepcost >= (2 << 20)); /* still there, not trimmed */
  free(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_keeps_freed_memory)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
