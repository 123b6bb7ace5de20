/* Record codec: round trips, validation, corruption detection, properties, tag hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/record.h"

uint32_t fy__crc32c_sw(uint32_t crc, const void *buf, size_t len);

static void test_crc32c_known_values(void **state) {
  (void)state;
  assert_int_equal(fy_crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(fy__crc32c_sw(0, "123456789", 9), 0xE3069283u);
  uint8_t zeros[32] = {0};
  assert_int_equal(fy_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
  /* Hardware and table paths agree on every length and alignment, and chaining works. */
  uint8_t buf[300];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (uint8_t)(i * 7 + 3);
  for (size_t off = 0; off < 9; off++)
    for (size_t len = 0; len + off <= sizeof buf; len += 13) {
      uint32_t a = fy_crc32c(0, buf + off, len);
      assert_int_equal(a, fy__crc32c_sw(0, buf + off, len));
      uint32_t b = fy_crc32c(fy_crc32c(0, buf + off, len / 2), buf + off + len / 2, len - len / 2);
      assert_int_equal(a, b);
    }
}

static struct fy_msg sample(char *props, uint16_t props_len, const char *body, bool v6) {
  struct fy_msg m = {0};
  m.queue_id = 3;
  m.flag = 0x11223344;
  m.queue_offset = 77;
  m.phys_offset = 4096;
  m.sys_flag = FY_SYSFLAG_COMPRESSED;
  m.born_ts_ms = 1764096000123;
  m.born_host.ip[0] = 127; m.born_host.ip[3] = 1; m.born_host.port = 40000;
  m.born_host.v6 = v6;
  if (v6) m.born_host.ip[15] = 9;
  m.store_ts_ms = 1764096000456;
  m.store_host.ip[0] = 10; m.store_host.port = 10911;
  m.reconsume_times = 2;
  m.prepared_tx_offset = 99;
  m.body = (const uint8_t *)body;
  m.body_len = (uint32_t)strlen(body);
  m.topic = "TopicTest";
  m.topic_len = 9;
  m.props = props;
  m.props_len = props_len;
  return m;
}

static void test_round_trip(void **state) {
  (void)state;
  char props[128];
  size_t plen = 0;
  assert_int_equal(fy_props_add(props, sizeof props, &plen, FY_PROP_TAGS, "TagA", 4), 0);
  assert_int_equal(fy_props_add(props, sizeof props, &plen, FY_PROP_KEYS, "k1 k2", 5), 0);
  for (int v6 = 0; v6 < 2; v6++) {
    struct fy_msg m = sample(props, (uint16_t)plen, "hello, ferry", v6);
    uint32_t size = fy_record_size(&m);
    assert_int_equal(size, FY_RECORD_FIXED_V4 + (v6 ? 12 : 0) + 12 + 9 + plen);
    uint8_t *buf = malloc(size);
    assert_int_equal(fy_record_encode(&m, buf), size);

    enum fy_record_kind kind;
    struct fy_msg d;
    assert_int_equal(fy_record_decode(buf, size, 4096, &kind, &d), size);
    assert_int_equal(kind, FY_REC_MSG);
    assert_int_equal(d.queue_id, 3);
    assert_int_equal(d.flag, 0x11223344);
    assert_int_equal(d.queue_offset, 77);
    assert_int_equal(d.phys_offset, 4096);
    assert_int_equal(d.sys_flag & FY_SYSFLAG_COMPRESSED, FY_SYSFLAG_COMPRESSED);
    assert_int_equal(!!(d.sys_flag & FY_SYSFLAG_BORNHOST_V6), v6);
    assert_int_equal(d.born_ts_ms, 1764096000123);
    assert_int_equal(d.store_ts_ms, 1764096000456);
    assert_memory_equal(d.born_host.ip, m.born_host.ip, v6 ? 16 : 4);
    assert_int_equal(d.born_host.port, 40000);
    assert_int_equal(d.store_host.port, 10911);
    assert_int_equal(d.reconsume_times, 2);
    assert_int_equal(d.prepared_tx_offset, 99);
    assert_int_equal(d.body_len, 12);
    assert_memory_equal(d.body, "hello, ferry", 12);
    assert_int_equal(d.topic_len, 9);
    assert_memory_equal(d.topic, "TopicTest", 9);
    const char *v;
    size_t vlen;
    assert_true(fy_props_get(d.props, d.props_len, FY_PROP_KEYS, &v, &vlen));
    assert_int_equal(vlen, 5);
    assert_memory_equal(v, "k1 k2", 5);
    assert_false(fy_props_get(d.props, d.props_len, "NOPE", &v, &vlen));

    /* Restamp changes the assigned fields and keeps the record valid. */
    fy_record_restamp(buf, 5, 8192, 42);
    assert_int_equal(fy_record_decode(buf, size, 4096, &kind, &d), -FY_ECORRUPT);
    assert_int_equal(fy_record_decode(buf, size, 8192, &kind, &d), size);
    assert_int_equal(d.queue_offset, 5);
    assert_int_equal(d.store_ts_ms, 42);
    free(buf);
  }
}

static void test_every_single_byte_corruption_is_detected(void **state) {
  (void)state;
  char props[64];
  size_t plen = 0;
  assert_int_equal(fy_props_add(props, sizeof props, &plen, FY_PROP_TAGS, "T", 1), 0);
  struct fy_msg m = sample(props, (uint16_t)plen, "payload bytes", false);
  uint32_t size = fy_record_size(&m);
  uint8_t *buf = malloc(size + 64);
  memset(buf, 0, size + 64);
  fy_record_encode(&m, buf);
  enum fy_record_kind kind;
  unsigned checked = 0;
  for (uint32_t i = 0; i < size; i++) {
    uint8_t orig = buf[i];
    for (unsigned v = 0; v < 256; v++) {
      if (v == orig)
        continue;
      buf[i] = (uint8_t)v;
      /* Whatever follows (more room than the record needs) must not rescue it. */
      int64_t r = fy_record_decode(buf, size + 64, 4096, &kind, NULL);
      if (r == FY_BLANK_SIZE && kind == FY_REC_BLANK)
        r = -FY_ECORRUPT; /* cannot happen with this magic, but would be caught by length */
      assert_true(r < 0);
      checked++;
    }
    buf[i] = orig;
  }
  assert_int_equal(checked, size * 255);
  assert_int_equal(fy_record_decode(buf, size, 4096, &kind, NULL), size);
  free(buf);
}

static void test_truncated_and_zero(void **state) {
  (void)state;
  struct fy_msg m = sample(NULL, 0, "abc", false);
  uint32_t size = fy_record_size(&m);
  uint8_t buf[256] = {0};
  enum fy_record_kind kind;
  /* Zeros are the end of the log, not "wait for more". */
  assert_int_equal(fy_record_decode(buf, sizeof buf, 0, &kind, NULL), -FY_ECORRUPT);
  assert_int_equal(fy_record_decode(buf, 3, 0, &kind, NULL), -FY_ECORRUPT);
  m.phys_offset = 0;
  fy_record_encode(&m, buf);
  for (uint32_t avail = 1; avail < size; avail++)
    assert_int_equal(fy_record_decode(buf, avail, 0, &kind, NULL), -EAGAIN);
  assert_int_equal(fy_record_decode(buf, size, 0, &kind, NULL), size);
}

static void test_blank_and_limits(void **state) {
  (void)state;
  uint8_t buf[16];
  fy_record_encode_blank(buf, 1234);
  enum fy_record_kind kind;
  assert_int_equal(fy_record_decode(buf, sizeof buf, 0, &kind, NULL), 1234);
  assert_int_equal(kind, FY_REC_BLANK);

  struct fy_msg m = sample(NULL, 0, "x", false);
  m.topic_len = 0;
  assert_int_equal(fy_record_size(&m), 0);
  m.topic_len = FY_TOPIC_MAX + 1;
  assert_int_equal(fy_record_size(&m), 0);
  m.topic_len = 3;
  m.props_len = FY_PROPS_MAX + 1;
  assert_int_equal(fy_record_size(&m), 0);
}

static void test_props_edge_cases(void **state) {
  (void)state;
  char buf[16];
  size_t len = 0;
  assert_int_equal(fy_props_add(buf, sizeof buf, &len, "A", "1", 1), 0);
  assert_int_equal(fy_props_add(buf, sizeof buf, &len, "B\x01", "1", 1), -EINVAL);
  assert_int_equal(fy_props_add(buf, sizeof buf, &len, "B", "v\x02", 2), -EINVAL);
  assert_int_equal(fy_props_add(buf, sizeof buf, &len, "LONGKEY", "value!", 6), -ENOSPC);
  assert_int_equal(len, 4);
  const char *v;
  size_t vlen;
  assert_true(fy_props_get(buf, len, "A", &v, &vlen));
  assert_int_equal(vlen, 1);
  /* Malformed input from the network: no separator, unterminated value. */
  assert_false(fy_props_get("ABC", 3, "ABC", &v, &vlen));
  assert_true(fy_props_get("K\x01xyz", 5, "K", &v, &vlen));
  assert_int_equal(vlen, 3);
  /* The first of a repeated name counts. */
  assert_true(fy_props_get("K\x01" "a\x02K\x01" "b\x02", 8, "K", &v, &vlen));
  assert_memory_equal(v, "a", 1);
}

/* fy_props_next walks every property once, in order, empty names and
 * values included, and stops at a tail without a separator. */
static void test_props_next(void **state) {
  (void)state;
  static const char props[] =
      "TAGS\x01TagA\x02\x01" "empty-name\x02KEYS\x01\x02UNIQ_KEY\x01u1\x02junk";
  const char *pos = props, *end = props + sizeof props - 1, *k, *v;
  size_t kl, vl;
  static const char *want[][2] = {{"TAGS", "TagA"}, {"", "empty-name"}, {"KEYS", ""},
                                  {"UNIQ_KEY", "u1"}};
  for (size_t i = 0; i < 4; i++) {
    assert_true(fy_props_next(&pos, end, &k, &kl, &v, &vl));
    assert_int_equal(kl, strlen(want[i][0]));
    assert_memory_equal(k, want[i][0], kl);
    assert_int_equal(vl, strlen(want[i][1]));
    assert_memory_equal(v, want[i][1], vl);
  }
  assert_false(fy_props_next(&pos, end, &k, &kl, &v, &vl)); /* "junk" has no \x01 */
  pos = props;
  assert_false(fy_props_next(&pos, props, &k, &kl, &v, &vl)); /* empty */
  pos = "K\x01unterminated";
  end = pos + 14;
  assert_true(fy_props_next(&pos, end, &k, &kl, &v, &vl));
  assert_int_equal(vl, 12);
  assert_ptr_equal(pos, end);
  assert_false(fy_props_next(&pos, end, &k, &kl, &v, &vl));
}

static void test_tag_hash_matches_java(void **state) {
  (void)state;
  /* Values of java.lang.String.hashCode(). */
  assert_int_equal(fy_tag_hash("TagA", 4), 2598919);
  assert_int_equal(fy_tag_hash("", 0), 0);
  assert_int_equal(fy_tag_hash("\xe6\xa0\x87\xe7\xad\xbe", 6), 857175);       /* 标签 */
  assert_int_equal(fy_tag_hash("a\xf0\x9f\x98\x80" "b", 6), 57849694);          /* a😀b */
  assert_int_equal(fy_tag_hash("hello world this is a long tag", 30), -601470363);
}

static void test_strerror(void **state) {
  (void)state;
  assert_string_equal(fy_errname(-FY_ECORRUPT), "CORRUPT");
  assert_string_equal(fy_errname(-EIO), "EIO");
  assert_non_null(strstr(fy_strerror(-FY_EDISK_FULL), "disk"));
  assert_string_equal(fy_strerror(0), "success");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc32c_known_values),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_every_single_byte_corruption_is_detected),
      cmocka_unit_test(test_truncated_and_zero),
      cmocka_unit_test(test_blank_and_limits),
      cmocka_unit_test(test_props_edge_cases),
      cmocka_unit_test(test_props_next),
      cmocka_unit_test(test_tag_hash_matches_java),
      cmocka_unit_test(test_strerror),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
