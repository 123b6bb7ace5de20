/* client, pure parts: AllocateMessageQueueAveragely checked exhaustively
 * against RocketMQ's Java formula and its invariants for every n <= 64
 * queues and c <= 16 consumers; tag expressions (RocketMQ's parsing
 * rules, hashes, the client's re-check); message ids (UNIQ_KEY shape,
 * offset msg id round trip); received-record decoding (valid records,
 * every single-byte corruption of one, truncation, trailing garbage);
 * result arenas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/record.h"

/* ------------------------------------------------------------ allocation */

/* RocketMQ 4.9.8 AllocateMessageQueueAveragely.allocate, transcribed with
 * Java int arithmetic. */
static void java_alloc(int n, int c, int index, int *first, int *count) {
  int mod = n % c;
  int averageSize = n <= c ? 1 : (mod > 0 && index < mod ? n / c + 1 : n / c);
  int startIndex = (mod > 0 && index < mod) ? index * averageSize : index * averageSize + mod;
  int range = averageSize < n - startIndex ? averageSize : n - startIndex;
  *first = startIndex;
  *count = range > 0 ? range : 0;
}

static void test_alloc_exhaustive(void **state) {
  (void)state;
  for (size_t n = 0; n <= 64; n++) {
    for (size_t c = 1; c <= 16; c++) {
      int owner[64];
      for (size_t q = 0; q < n; q++)
        owner[q] = -1;
      size_t min = SIZE_MAX, max = 0, prev_end = 0;
      for (size_t i = 0; i < c; i++) {
        size_t first, count;
        fy__alloc_averagely(n, c, i, &first, &count);
        int jf, jc;
        java_alloc((int)n, (int)c, (int)i, &jf, &jc);
        assert_int_equal(count, (size_t)jc);
        if (count)
          assert_int_equal(first, (size_t)jf);
        /* contiguous blocks in consumer order, no overlap */
        if (count) {
          assert_int_equal(first, prev_end);
          prev_end = first + count;
        }
        for (size_t k = 0; k < count; k++) {
          assert_true(first + k < n);
          assert_int_equal(owner[first + k], -1);
          owner[first + k] = (int)i;
        }
        if (count < min)
          min = count;
        if (count > max)
          max = count;
        /* the first n mod c consumers get the bigger share */
        if (n >= c)
          assert_int_equal(count, n / c + (i < n % c ? 1 : 0));
        else
          assert_int_equal(count, i < n ? 1u : 0u);
      }
      for (size_t q = 0; q < n; q++)
        assert_true(owner[q] >= 0); /* every queue owned exactly once */
      if (n)
        assert_true(max - min <= 1);
    }
  }
  size_t f, k;
  fy__alloc_averagely(8, 0, 0, &f, &k); /* no consumers */
  assert_int_equal(k, 0);
  fy__alloc_averagely(8, 3, 3, &f, &k); /* not in the list */
  assert_int_equal(k, 0);
}

/* Examples from RocketMQ's own unit test (AllocateMessageQueueAveragelyTest). */
static void test_alloc_examples(void **state) {
  (void)state;
  size_t f, k;
  fy__alloc_averagely(10, 3, 0, &f, &k);
  assert_true(f == 0 && k == 4);
  fy__alloc_averagely(10, 3, 1, &f, &k);
  assert_true(f == 4 && k == 3);
  fy__alloc_averagely(10, 3, 2, &f, &k);
  assert_true(f == 7 && k == 3);
  fy__alloc_averagely(2, 4, 2, &f, &k);
  assert_int_equal(k, 0);
  fy__alloc_averagely(2, 4, 1, &f, &k);
  assert_true(f == 1 && k == 1);
}

/* ---------------------------------------------------------- subscriptions */

static void test_sub_parse(void **state) {
  (void)state;
  struct fy__sub s;
  const char *alls[] = {NULL, "", "*", "  *  ", " "};
  for (size_t i = 0; i < sizeof alls / sizeof *alls; i++) {
    assert_int_equal(fy__sub_parse(&s, "T", alls[i]), 0);
    assert_true(s.all);
    assert_string_equal(s.expr, "*");
    assert_true(fy__sub_match(&s, NULL));
    assert_true(fy__sub_match(&s, "anything"));
  }
  assert_int_equal(fy__sub_parse(&s, "T", "TagA || TagB"), 0);
  assert_false(s.all);
  assert_int_equal(s.ntags, 2);
  assert_string_equal(s.tags[0], "TagA");
  assert_string_equal(s.tags[1], "TagB");
  assert_int_equal(s.nhashes, 2);
  assert_int_equal(s.hashes[0], fy_tag_hash("TagA", 4));
  assert_int_equal(s.hashes[1], fy_tag_hash("TagB", 4));
  assert_true(fy__sub_match(&s, "TagA"));
  assert_true(fy__sub_match(&s, "TagB"));
  assert_false(fy__sub_match(&s, "TagC"));
  assert_false(fy__sub_match(&s, "taga"));
  assert_false(fy__sub_match(&s, ""));   /* no tag never matches a tag list */
  assert_false(fy__sub_match(&s, NULL));

  /* RocketMQ: split on "||", trim, drop empty parts; a single '|' stays */
  assert_int_equal(fy__sub_parse(&s, "T", "||A||  ||B ||"), 0);
  assert_int_equal(s.ntags, 2);
  assert_string_equal(s.tags[0], "A");
  assert_string_equal(s.tags[1], "B");
  assert_int_equal(fy__sub_parse(&s, "T", "A|B"), 0);
  assert_int_equal(s.ntags, 1);
  assert_string_equal(s.tags[0], "A|B");
  assert_int_equal(fy__sub_parse(&s, "T", "A || A"), 0); /* duplicates folded */
  assert_int_equal(s.ntags, 1);
  assert_int_equal(fy__sub_parse(&s, "T", "\xe4\xb8\xad || x"), 0); /* UTF-8 tag */
  assert_int_equal(s.hashes[0], fy_tag_hash("\xe4\xb8\xad", 3));
  assert_string_equal(s.expr, "\xe4\xb8\xad || x");

  assert_int_equal(fy__sub_parse(&s, "T", "||"), -EINVAL);   /* separators only */
  assert_int_equal(fy__sub_parse(&s, "T", " || || "), -EINVAL);
  assert_int_equal(fy__sub_parse(&s, "", "A"), -EINVAL);     /* no topic */
  char big[FY__EXPR_MAX + 8];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(fy__sub_parse(&s, "T", big), -EINVAL);
  char many[2048] = "";
  for (int i = 0; i <= FY__TAGS_MAX; i++) {
    char t[16];
    snprintf(t, sizeof t, "%st%d", i ? "||" : "", i);
    strcat(many, t);
  }
  assert_int_equal(fy__sub_parse(&s, "T", many), -EINVAL); /* 65 tags */
}

/* ------------------------------------------------------------- message ids */

static fy_client *fake_client(void) {
  static fy_client cl;
  cl.ip[0] = 10;
  cl.ip[1] = 1;
  cl.ip[2] = 2;
  cl.ip[3] = 3;
  cl.msgid_rand = 0xA1B2C3D4u;
  return &cl;
}

static void test_msgid(void **state) {
  (void)state;
  fy_client *cl = fake_client();
  char a[40], b[40];
  fy__msgid_new(cl, a);
  fy__msgid_new(cl, b);
  assert_int_equal(strlen(a), 32);
  for (int i = 0; i < 32; i++)
    assert_true(isxdigit((unsigned char)a[i]) && !islower((unsigned char)a[i]));
  assert_memory_equal(a, "0A010203", 8);     /* IP */
  assert_memory_equal(a + 12, "A1B2C3D4", 8); /* random part */
  assert_string_not_equal(a, b);              /* counter */
  /* a few thousand are all distinct */
  enum { N = 5000 };
  static char ids[N][33];
  for (int i = 0; i < N; i++)
    fy__msgid_new(cl, ids[i]);
  for (int i = 1; i < N; i++)
    assert_string_not_equal(ids[i], ids[i - 1]);

  struct fy_host h = {.ip = {127, 0, 0, 1}, .port = 10911};
  char oid[FY_CLIENT_MSGID_MAX];
  fy__offset_msgid(&h, 0x0102030405060708ull, oid, sizeof oid);
  assert_string_equal(oid, "7F00000100002A9F0102030405060708");
  char addr[64];
  uint64_t phys;
  assert_int_equal(fy__offset_msgid_decode(oid, addr, sizeof addr, &phys), 0);
  assert_string_equal(addr, "127.0.0.1:10911");
  assert_true(phys == 0x0102030405060708ull);
  assert_int_equal(fy__offset_msgid_decode("7f00000100002a9f0102030405060708", addr, sizeof addr,
                                           &phys), 0);
  assert_int_equal(fy__offset_msgid_decode("XYZ", addr, sizeof addr, &phys), -EINVAL);
  assert_int_equal(fy__offset_msgid_decode("7F00000100000000010203040506070G", addr, sizeof addr,
                                           &phys), -EINVAL);
  assert_int_equal(fy__offset_msgid_decode("7F000001000000000102030405060708", addr, sizeof addr,
                                           &phys), -EINVAL); /* port 0 */
  struct fy_host h6 = {.ip = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}, .port = 9, .v6 = true};
  fy__offset_msgid(&h6, 77, oid, sizeof oid);
  assert_int_equal(strlen(oid), 56);
  assert_int_equal(fy__offset_msgid_decode(oid, addr, sizeof addr, &phys), 0);
  assert_string_equal(addr, "[2001:db8::1]:9");
  assert_true(phys == 77);
}

/* -------------------------------------------------------------- records */

/* Encodes a record as a broker stores it: queue offset q at physical
 * offset phys; returns its size. */
static uint32_t make_record(uint8_t *out, const char *topic, uint32_t qid, uint64_t q,
                            uint64_t phys, const char *body, const char *tags,
                            const char *uniq) {
  char props[256];
  size_t pl = 0;
  if (tags)
    fy_props_add(props, sizeof props, &pl, FY_PROP_TAGS, tags, strlen(tags));
  fy_props_add(props, sizeof props, &pl, FY_PROP_KEYS, "k1 k2", 5);
  fy_props_add(props, sizeof props, &pl, FY_PROP_UNIQ_KEY, uniq, strlen(uniq));
  fy_props_add(props, sizeof props, &pl, "color", "blue", 4);
  struct fy_msg m = {
      .queue_id = qid,
      .flag = 7,
      .queue_offset = q,
      .phys_offset = phys,
      .born_ts_ms = 1000,
      .born_host = {.ip = {10, 0, 0, 9}, .port = 5555},
      .store_ts_ms = 2000,
      .store_host = {.ip = {127, 0, 0, 1}, .port = 10911},
      .reconsume_times = 2,
      .body = (const uint8_t *)body,
      .body_len = (uint32_t)strlen(body),
      .topic = topic,
      .topic_len = (uint16_t)strlen(topic),
      .props = props,
      .props_len = (uint16_t)pl,
  };
  uint32_t size = fy_record_size(&m);
  assert_true(size > 0);
  return fy_record_encode(&m, out);
}

static void test_records(void **state) {
  (void)state;
  uint8_t buf[4096];
  size_t len = 0;
  uint64_t phys = 5000;
  for (int i = 0; i < 3; i++) {
    char body[32], uniq[40];
    snprintf(body, sizeof body, "body-%d", i);
    snprintf(uniq, sizeof uniq, "UNIQ%028d", i);
    uint32_t n = make_record(buf + len, "TopicA", 3, 100 + (uint64_t)i, phys, body,
                             i == 1 ? NULL : "TagA", uniq);
    len += n;
    phys += n + 1000; /* records of one pull need not be adjacent in the log */
  }
  fy_message_list *l;
  assert_int_equal(fy__msg_list_build(buf, len, 3, "broker-a", 1, &l), 0);
  assert_int_equal(l->n, 3);
  const fy_message_view *v = &l->msgs[0];
  assert_string_equal(v->topic, "TopicA");
  assert_string_equal(v->broker_name, "broker-a");
  assert_true(v->broker_id == 1);
  assert_int_equal(v->queue_id, 3);
  assert_true(v->queue_offset == 100);
  assert_true(v->commitlog_offset == 5000);
  assert_int_equal(v->body_len, 6);
  assert_memory_equal(v->body, "body-0", 6);
  assert_string_equal(v->tags, "TagA");
  assert_string_equal(v->keys, "k1 k2");
  assert_string_equal(v->msg_id, "UNIQ0000000000000000000000000000");
  assert_string_equal(v->offset_msg_id, "7F00000100002A9F0000000000001388");
  assert_string_equal(v->born_host, "10.0.0.9:5555");
  assert_string_equal(v->store_host, "127.0.0.1:10911");
  assert_true(v->born_ts_ms == 1000 && v->store_ts_ms == 2000);
  assert_int_equal(v->flag, 7);
  assert_int_equal(v->reconsume_times, 2);
  assert_int_equal(v->nprops, 4);
  assert_string_equal(v->props[3].key, "color");
  assert_string_equal(v->props[3].value, "blue");
  assert_string_equal(l->msgs[1].tags, ""); /* no TAGS property */
  assert_true(l->msgs[2].queue_offset == 102);
  fy_result_free(l);

  /* count larger or smaller than the section, trailing bytes */
  assert_int_equal(fy__records_walk(buf, len, 4, NULL, NULL), -FY_ECORRUPT);
  assert_int_equal(fy__records_walk(buf, len, 2, NULL, NULL), -FY_ECORRUPT);
  assert_int_equal(fy__records_walk(buf, len - 1, 3, NULL, NULL), -FY_ECORRUPT);
  assert_int_equal(fy__records_walk(buf, 0, 0, NULL, NULL), 0);

  /* every single-byte change of the first record is caught */
  uint8_t one[512];
  uint32_t n = make_record(one, "T", 0, 0, 64, "x", "TagA", "U");
  assert_int_equal(fy__records_walk(one, n, 1, NULL, NULL), 1);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t bad[512];
    memcpy(bad, one, n);
    bad[i] ^= 0x20;
    assert_int_equal(fy__records_walk(bad, n, 1, NULL, NULL), -FY_ECORRUPT);
  }
}

/* ---------------------------------------------------------------- arenas */

static void test_arena(void **state) {
  (void)state;
  struct fy__arena *a;
  uint64_t *r = fy__result_new(sizeof *r, 64, &a);
  assert_non_null(r);
  assert_true(*r == 0);
  for (int i = 0; i < 2000; i++) {
    char *s = fy__cl_arena_strdup(a, "hello");
    assert_string_equal(s, "hello");
    assert_int_equal((uintptr_t)s % 16, 0);
  }
  void *big = fy__cl_arena_alloc(a, 1 << 20); /* own chunk */
  memset(big, 1, 1 << 20);
  char *after = fy__cl_arena_strdup(a, "after");
  assert_string_equal(after, "after");
  fy_result_free(r); /* ASan: nothing leaks */
  fy_result_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alloc_exhaustive), cmocka_unit_test(test_alloc_examples),
      cmocka_unit_test(test_sub_parse),        cmocka_unit_test(test_msgid),
      cmocka_unit_test(test_records),          cmocka_unit_test(test_arena),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
