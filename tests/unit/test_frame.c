/* frame: header round trips, incremental parsing (every truncation asks for
 * more), each bad field rejected as soon as its bytes are in, and the
 * bounded protobuf unpack. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "ferry.pb-c.h"
#include "net/frame.h"
#include "net/rpc.h"

/* Under AddressSanitizer a refused allocation returns NULL, as glibc's
 * does, instead of ending the test (test_unpack_arena_nomem). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

/* Builds a frame into buf (24 + pb + raw bytes); returns its size. */
static size_t build(uint8_t *buf, size_t cap, enum fy_frame_kind kind, uint64_t id, uint16_t op,
                    uint16_t status, const ProtobufCMessage *msg, const uint8_t *raw,
                    size_t raw_len) {
  size_t pb = fy_pb_packed_size(msg);
  assert_true(FY_FRAME_HEADER_LEN + pb + raw_len <= cap);
  fy_frame_encode_header(buf, kind, (uint32_t)(pb + raw_len), id, op, status, (uint32_t)pb);
  assert_int_equal(fy_pb_pack(msg, buf + FY_FRAME_HEADER_LEN), pb);
  if (raw_len)
    memcpy(buf + FY_FRAME_HEADER_LEN + pb, raw, raw_len);
  return FY_FRAME_HEADER_LEN + pb + raw_len;
}

static void test_header_layout(void **state) {
  (void)state;
  uint8_t h[FY_FRAME_HEADER_LEN];
  fy_frame_encode_header(h, FY_FRAME_RESPONSE, 0x01020304, 0x1112131415161718ull, 0x2122, 0x3132,
                         0x01020300);
  static const uint8_t want[FY_FRAME_HEADER_LEN] = {
      'F',  'Y',  1,    1,    0x01, 0x02, 0x03, 0x04, 0x11, 0x12, 0x13, 0x14,
      0x15, 0x16, 0x17, 0x18, 0x21, 0x22, 0x31, 0x32, 0x01, 0x02, 0x03, 0x00};
  assert_memory_equal(h, want, sizeof want);
}

static void test_round_trip(void **state) {
  (void)state;
  static uint8_t buf[1 << 16];
  static uint8_t raw[3000];
  for (size_t i = 0; i < sizeof raw; i++)
    raw[i] = (uint8_t)(i * 7);
  Ferry__V1__GetRouteRequest req = FERRY__V1__GET_ROUTE_REQUEST__INIT;
  req.topic = "TopicTest";
  const ProtobufCMessage *msgs[] = {NULL, &req.base};
  const size_t raws[] = {0, 1, sizeof raw};
  for (int kind = 0; kind <= FY_FRAME_ONEWAY; kind++)
    for (size_t m = 0; m < 2; m++)
      for (size_t r = 0; r < 3; r++) {
        size_t n = build(buf, sizeof buf, (enum fy_frame_kind)kind, 42 + r, 3, (uint16_t)kind,
                         msgs[m], raw, raws[r]);
        fy_frame f;
        size_t need = 0;
        assert_int_equal(fy_frame_parse(buf, n, FY_FRAME_MAX_DEFAULT, &f, &need), n);
        assert_int_equal(f.version, FY_FRAME_VERSION);
        assert_int_equal(f.kind, kind);
        assert_int_equal(f.request_id, 42 + r);
        assert_int_equal(f.op, 3);
        assert_int_equal(f.status, kind);
        assert_int_equal(f.header_len, fy_pb_packed_size(msgs[m]));
        assert_int_equal(f.raw_len, raws[r]);
        assert_int_equal(f.payload_len, f.header_len + f.raw_len);
        assert_ptr_equal(f.header, buf + FY_FRAME_HEADER_LEN);
        assert_ptr_equal(f.raw, buf + FY_FRAME_HEADER_LEN + f.header_len);
        if (raws[r])
          assert_memory_equal(f.raw, raw, raws[r]);
        ProtobufCMessage *out;
        assert_int_equal(fy_frame_unpack(&f, &ferry__v1__get_route_request__descriptor, &out), 0);
        const Ferry__V1__GetRouteRequest *got = (const Ferry__V1__GetRouteRequest *)out;
        assert_string_equal(got->topic, m ? "TopicTest" : "");
        fy_pb_free(out);
      }
}

static void test_back_to_back(void **state) {
  (void)state;
  static uint8_t buf[4096];
  size_t n = 0;
  for (uint64_t id = 1; id <= 10; id++)
    n += build(buf + n, sizeof buf - n, FY_FRAME_REQUEST, id, 10, 0, NULL, (const uint8_t *)"abc",
               id % 4);
  size_t off = 0;
  for (uint64_t id = 1; id <= 10; id++) {
    fy_frame f;
    ssize_t r = fy_frame_parse(buf + off, n - off, 1024, &f, NULL);
    assert_true(r > 0);
    assert_int_equal(f.request_id, id);
    assert_int_equal(f.raw_len, id % 4);
    off += (size_t)r;
  }
  assert_int_equal(off, n);
}

static void test_every_truncation_needs_more(void **state) {
  (void)state;
  static uint8_t buf[1024];
  Ferry__V1__GetRouteRequest req = FERRY__V1__GET_ROUTE_REQUEST__INIT;
  req.topic = "T";
  size_t n = build(buf, sizeof buf, FY_FRAME_REQUEST, 7, 3, 0, &req.base, (const uint8_t *)"xyz", 3);
  for (size_t len = 0; len < n; len++) {
    fy_frame f;
    size_t need = 0;
    assert_int_equal(fy_frame_parse(buf, len, (uint32_t)n, &f, &need), 0);
    assert_int_equal(need, len < FY_FRAME_HEADER_LEN ? FY_FRAME_HEADER_LEN : n);
  }
  fy_frame f;
  /* The limit is inclusive. */
  assert_int_equal(fy_frame_parse(buf, n, (uint32_t)(n - FY_FRAME_HEADER_LEN), &f, NULL), n);
}

/* Each bad field is refused as soon as its bytes are in, and not before. */
static void test_bad_fields(void **state) {
  (void)state;
  uint8_t good[FY_FRAME_HEADER_LEN];
  fy_frame_encode_header(good, FY_FRAME_REQUEST, 100, 99, 10, 0, 50);
  struct {
    size_t off;
    uint8_t value;
    int err;
  } cases[] = {
      {0, 'G', -FY_EFRAME_MAGIC},   {0, 0x00, -FY_EFRAME_MAGIC},     {1, 'Z', -FY_EFRAME_MAGIC},
      {2, 0, -FY_EFRAME_VERSION},   {2, 2, -FY_EFRAME_VERSION},      {3, 3, -FY_EFRAME_KIND},
      {3, 0xff, -FY_EFRAME_KIND},   {4, 0x01, -FY_EFRAME_TOO_BIG},   /* 16 MiB + 100 */
      {4, 0x80, -FY_EFRAME_TOO_BIG}, {21, 0x01, -FY_EFRAME_HEADER}, /* header 65536+50 > 100 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t h[FY_FRAME_HEADER_LEN];
    memcpy(h, good, sizeof h);
    h[cases[i].off] = cases[i].value;
    /* The field whose last byte is at off is checked once that byte is in;
     * the payload length and header length are 4-byte fields. */
    size_t field_end = cases[i].off + 1;
    if (cases[i].off >= 4 && cases[i].off < 8)
      field_end = 8;
    if (cases[i].off >= 20)
      field_end = FY_FRAME_HEADER_LEN;
    for (size_t len = 0; len <= sizeof h; len++) {
      fy_frame f;
      ssize_t r = fy_frame_parse(h, len, FY_FRAME_MAX_DEFAULT, &f, NULL);
      if (len < field_end)
        assert_int_equal(r, 0);
      else
        assert_int_equal(r, cases[i].err);
    }
    /* With the whole header in and a good magic, the ids are known. */
    fy_frame f;
    fy_frame_parse(h, sizeof h, FY_FRAME_MAX_DEFAULT, &f, NULL);
    if (cases[i].err == -FY_EFRAME_MAGIC) {
      assert_int_equal(f.kind, 0xff);
    } else {
      assert_int_equal(f.request_id, 99);
      assert_int_equal(f.op, 10);
    }
  }
}

/* A 4 GiB payload claim is refused after 8 bytes: nothing waits for it and
 * nothing is sized by it. */
static void test_oversize_before_allocation(void **state) {
  (void)state;
  uint8_t h[FY_FRAME_HEADER_LEN];
  fy_frame_encode_header(h, FY_FRAME_REQUEST, UINT32_MAX, 5, 11, 0, 0);
  fy_frame f;
  size_t need = 12345;
  assert_int_equal(fy_frame_parse(h, 7, FY_FRAME_MAX_DEFAULT, &f, &need), 0);
  assert_int_equal(need, FY_FRAME_HEADER_LEN);
  assert_int_equal(fy_frame_parse(h, 8, FY_FRAME_MAX_DEFAULT, &f, &need), -FY_EFRAME_TOO_BIG);
  assert_int_equal(need, FY_FRAME_HEADER_LEN);
  assert_int_equal(fy_frame_parse(h, sizeof h, FY_FRAME_MAX_DEFAULT, &f, &need),
                   -FY_EFRAME_TOO_BIG);
  assert_int_equal(f.request_id, 5);
  assert_int_equal(f.kind, FY_FRAME_REQUEST);
}

/* Packs a send request of 100 messages into *out (malloc'd); returns its length. */
static size_t pack_send_request(uint8_t **out) {
  Ferry__V1__SendMessage sm[100];
  Ferry__V1__SendMessage *psm[100];
  Ferry__V1__KeyValue kv = FERRY__V1__KEY_VALUE__INIT;
  Ferry__V1__KeyValue *pkv = &kv;
  kv.key = "KEYS";
  kv.value = "order-1";
  for (int i = 0; i < 100; i++) {
    ferry__v1__send_message__init(&sm[i]);
    sm[i].body_len = (uint32_t)i;
    sm[i].tags = "TagA";
    sm[i].keys = "k1 k2";
    sm[i].n_properties = 1;
    sm[i].properties = &pkv;
    sm[i].born_timestamp = 1700000000000 + i;
    sm[i].uniq_key = "7F0000010001000000000000000000000";
    psm[i] = &sm[i];
  }
  Ferry__V1__SendRequest req = FERRY__V1__SEND_REQUEST__INIT;
  req.producer_group = "pg";
  req.topic = "TopicTest";
  req.queue_id = -1;
  req.n_messages = 100;
  req.messages = psm;
  size_t len = fy_pb_packed_size(&req.base);
  *out = malloc(len);
  assert_non_null(*out);
  assert_int_equal(fy_pb_pack(&req.base, *out), len);
  return len;
}

static void check_send_request(const ProtobufCMessage *m) {
  const Ferry__V1__SendRequest *got = (const Ferry__V1__SendRequest *)m;
  assert_int_equal(got->n_messages, 100);
  assert_int_equal(got->queue_id, -1);
  assert_string_equal(got->topic, "TopicTest");
  assert_int_equal(got->messages[99]->body_len, 99);
  assert_int_equal(got->messages[7]->born_timestamp, 1700000000007);
  assert_string_equal(got->messages[42]->keys, "k1 k2");
  assert_string_equal(got->messages[42]->properties[0]->value, "order-1");
}

static void test_unpack_real_message(void **state) {
  (void)state;
  uint8_t *buf;
  size_t len = pack_send_request(&buf);
  ProtobufCMessage *out;
  assert_int_equal(fy_pb_unpack(&ferry__v1__send_request__descriptor, buf, len,
                                fy_pb_alloc_limit(len), &out),
                   0);
  check_send_request(out);
  fy_pb_free(out);
  /* Malformed: cut in the middle. */
  assert_int_equal(fy_pb_unpack(&ferry__v1__send_request__descriptor, buf, len - 3,
                                fy_pb_alloc_limit(len), &out),
                   -FY_EDECODE);
  assert_null(out);
  free(buf);
}

/* A block that cannot be had is -ENOMEM (the broker answers SYSTEM_BUSY),
 * leaves the arena empty rather than half set, and the next unpack works. */
static void test_unpack_arena_nomem(void **state) {
  (void)state;
  uint8_t *buf;
  size_t len = pack_send_request(&buf);
  struct fy_pb_arena a = {0};
  ProtobufCMessage *out = (ProtobufCMessage *)&a;
  assert_int_equal(fy_pb_unpack_in(&a, &ferry__v1__send_request__descriptor, buf, len,
                                   fy_pb_alloc_limit(len), &out),
                   0);
  fy_pb_arena_reset(&a);
  assert_non_null(a.buf);
  /* More than any machine has: malloc refuses it. */
  assert_int_equal(fy_pb_unpack_in(&a, &ferry__v1__send_request__descriptor, buf, len,
                                   SIZE_MAX / 4, &out),
                   -ENOMEM);
  assert_null(out);
  assert_null(a.buf);
  assert_int_equal(a.cap, 0);
  assert_int_equal(fy_pb_unpack_in(&a, &ferry__v1__send_request__descriptor, buf, len,
                                   fy_pb_alloc_limit(len), &out),
                   0);
  check_send_request(out);
  fy_pb_arena_free(&a);
  free(buf);
}

/* A hot path unpacks into one reused block: same message as fy_pb_unpack,
 * the same budget, and a block above the keep limit is not kept. */
static void test_unpack_arena(void **state) {
  (void)state;
  uint8_t *buf;
  size_t len = pack_send_request(&buf);
  struct fy_pb_arena a = {0};
  ProtobufCMessage *out;
  for (int round = 0; round < 2; round++) {
    assert_int_equal(fy_pb_unpack_in(&a, &ferry__v1__send_request__descriptor, buf, len,
                                     fy_pb_alloc_limit(len), &out),
                     0);
    check_send_request(out);
    assert_true((uint8_t *)out >= a.buf && (uint8_t *)out < a.buf + a.used);
    assert_true(a.used <= a.max);
    uint8_t *block = a.buf;
    fy_pb_arena_reset(&a);
    assert_ptr_equal(a.buf, block); /* kept for the next request */
    assert_int_equal(a.used, 0);
  }
  /* Malformed: cut in the middle. */
  assert_int_equal(fy_pb_unpack_in(&a, &ferry__v1__send_request__descriptor, buf, len - 3,
                                   fy_pb_alloc_limit(len), &out),
                   -FY_EDECODE);
  assert_null(out);
  fy_pb_arena_reset(&a);

  /* The budget refuses what it refuses to fy_pb_unpack (see below). */
  size_t n = 20000, elen = 2 * n;
  uint8_t *empties = malloc(elen);
  for (size_t i = 0; i < n; i++) {
    empties[2 * i] = 0x22;
    empties[2 * i + 1] = 0x00;
  }
  assert_int_equal(fy_pb_unpack_in(&a, &ferry__v1__send_request__descriptor, empties, elen,
                                   fy_pb_alloc_limit(elen), &out),
                   -FY_EDECODE);
  fy_pb_arena_reset(&a);
  /* With room, it unpacks; a block over FY_PB_ARENA_KEEP goes at reset. */
  assert_int_equal(fy_pb_unpack_in(&a, &ferry__v1__send_request__descriptor, empties, elen,
                                   FY_PB_ARENA_KEEP + 1, &out),
                   0);
  assert_int_equal(((Ferry__V1__SendRequest *)out)->n_messages, n);
  fy_pb_arena_reset(&a);
  assert_null(a.buf);
  assert_int_equal(a.cap, 0);
  fy_pb_arena_free(&a);
  free(empties);
  free(buf);
}

/* 20000 empty repeated sub-messages pack to 40 KB but unpack to ~2 MB:
 * the budget refuses what an unbounded allocator would grant. */
static void test_unpack_budget(void **state) {
  (void)state;
  size_t n = 20000, len = 2 * n;
  uint8_t *buf = malloc(len);
  for (size_t i = 0; i < n; i++) {
    buf[2 * i] = 0x22; /* field 4 (messages), wire type 2 */
    buf[2 * i + 1] = 0x00;
  }
  ProtobufCMessage *out;
  assert_int_equal(fy_pb_unpack(&ferry__v1__send_request__descriptor, buf, len,
                                fy_pb_alloc_limit(len), &out),
                   -FY_EDECODE);
  assert_int_equal(fy_pb_unpack(&ferry__v1__send_request__descriptor, buf, len, SIZE_MAX, &out),
                   0);
  assert_int_equal(((Ferry__V1__SendRequest *)out)->n_messages, n);
  fy_pb_free(out);
  /* An empty section is a message with default fields, within the floor. */
  assert_int_equal(fy_pb_unpack(&ferry__v1__send_request__descriptor, NULL, 0,
                                fy_pb_alloc_limit(0), &out),
                   0);
  fy_pb_free(out);
  free(buf);
}

static void test_error_text(void **state) {
  (void)state;
  uint8_t buf[256];
  Ferry__V1__ErrorResponse e = FERRY__V1__ERROR_RESPONSE__INIT;
  e.message = "topic not exist: T";
  size_t n = build(buf, sizeof buf, FY_FRAME_RESPONSE, 1, 11, FERRY__V1__STATUS__TOPIC_NOT_EXIST,
                   &e.base, NULL, 0);
  fy_frame f;
  assert_int_equal(fy_frame_parse(buf, n, 1024, &f, NULL), n);
  char text[8];
  assert_int_equal(fy_frame_error_text(&f, text, sizeof text), 0);
  assert_string_equal(text, "topic n"); /* cut to fit */
  char full[64];
  assert_int_equal(fy_frame_error_text(&f, full, sizeof full), 0);
  assert_string_equal(full, "topic not exist: T");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_layout),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_back_to_back),
      cmocka_unit_test(test_every_truncation_needs_more),
      cmocka_unit_test(test_bad_fields),
      cmocka_unit_test(test_oversize_before_allocation),
      cmocka_unit_test(test_unpack_real_message),
      cmocka_unit_test(test_unpack_budget),
      cmocka_unit_test(test_unpack_arena),
      cmocka_unit_test(test_unpack_arena_nomem),
      cmocka_unit_test(test_error_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
