/* strmap: put/get/del against a reference array, through growth and deletion shifts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strmap.h"

#define N 5000

/* "topic-<k>\0x": keys with an embedded NUL must work. */
static int make_key(char key[32], int k) {
  int len = snprintf(key, 32, "topic-%d", k);
  key[len] = '\0';
  key[len + 1] = 'x';
  return len + 2;
}

static void test_against_reference(void **state) {
  (void)state;
  fy_strmap *m = fy_strmap_new();
  static int present[N];
  static int values[N];
  memset(present, 0, sizeof present);
  srand(7);
  for (int step = 0; step < 60000; step++) {
    int k = rand() % N;
    char key[32];
    int len = make_key(key, k);
    int op = rand() % 3;
    if (op < 2) {
      values[k] = step;
      assert_int_equal(fy_strmap_put(m, key, (size_t)len, &values[k]), 0);
      present[k] = 1;
    } else {
      void *v = fy_strmap_del(m, key, (size_t)len);
      assert_true(present[k] ? v == &values[k] : v == NULL);
      present[k] = 0;
    }
    if (step % 1000 == 0) {
      size_t count = 0;
      for (int i = 0; i < N; i++) {
        len = make_key(key, i);
        void *v = fy_strmap_get(m, key, (size_t)len);
        assert_true(present[i] ? v == &values[i] : v == NULL);
        count += (size_t)present[i];
      }
      assert_int_equal(fy_strmap_size(m), count);
      size_t pos = 0, seen = 0, klen;
      const char *kp;
      void *vp;
      while (fy_strmap_next(m, &pos, &kp, &klen, &vp))
        seen++;
      assert_int_equal(seen, count);
    }
  }
  fy_strmap_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_against_reference)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
