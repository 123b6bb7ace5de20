/*
 * RocketMQ remoting codec: frames and headers checked against bytes built
 * here by hand from the protocol (not from the encoder), responses compared
 * byte for byte, round trips, every strict prefix, malformed input (run
 * under ASan for leaks), the stored-message layout field by field, batch
 * bodies, tags, msg ids and the code tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/record.h"
#include "remoting/remoting.h"

#define FRAME_MAX (4u << 20)

static size_t put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return 4;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* A frame around header and body as the protocol lays it out:
 * [total = 4 + hlen + blen][type << 24 | hlen][header][body]. malloc'd. */
static uint8_t *frame(uint8_t type, const void *hdr, size_t hlen, const void *body, size_t blen,
                      size_t *len) {
  uint8_t *f = malloc(8 + hlen + blen + 1);
  put_be32(f, (uint32_t)(4 + hlen + blen));
  put_be32(f + 4, (uint32_t)type << 24 | (uint32_t)hlen);
  memcpy(f + 8, hdr, hlen);
  if (blen)
    memcpy(f + 8 + hlen, body, blen);
  *len = 8 + hlen + blen;
  return f;
}

static uint8_t *json_frame(const char *json, const char *body, size_t *len) {
  return frame(FY_RMQ_JSON, json, strlen(json), body, body ? strlen(body) : 0, len);
}

/* ali-ons style SEND_MESSAGE_V2: every number a string. */
static const char SEND_V2_STRINGS[] =
    "{\"code\":310,\"language\":\"NODE\",\"opaque\":7,\"flag\":0,\"version\":373,"
    "\"remark\":null,\"extFields\":{\"a\":\"PG\",\"b\":\"TopicTest\",\"c\":\"TBW102\","
    "\"d\":\"4\",\"e\":\"2\",\"f\":\"0\",\"g\":\"1700000000000\",\"h\":\"0\","
    "\"i\":\"TAGS\\u0001TagA\\u0002KEYS\\u0001k1\\u0002\",\"j\":\"0\",\"k\":\"false\","
    "\"l\":\"16\",\"m\":\"false\"}}";

static void test_parse_json_send_v2_strings(void **state) {
  (void)state;
  size_t len;
  uint8_t *f = json_frame(SEND_V2_STRINGS, "hello", &len);
  fy_rmq_cmd c;
  assert_int_equal(fy_rmq_parse(f, len, FRAME_MAX, &c), (ssize_t)len);
  assert_int_equal(c.code, FY_RMQ_REQ_SEND_MESSAGE_V2);
  assert_int_equal(c.code, 310);
  assert_string_equal(c.language, "NODE");
  assert_int_equal(c.opaque, 7);
  assert_int_equal(c.flag, 0);
  assert_int_equal(c.version, 373);
  assert_null(c.remark);
  assert_int_equal(c.serialize, FY_RMQ_JSON);
  assert_int_equal(c.next, 13);
  assert_int_equal(c.body_len, 5);
  assert_ptr_equal(c.body, f + len - 5);
  assert_memory_equal(c.body, "hello", 5);
  assert_string_equal(fy_rmq_ext(&c, "a"), "PG");
  assert_string_equal(fy_rmq_ext(&c, "b"), "TopicTest");
  assert_string_equal(fy_rmq_ext(&c, "c"), "TBW102");
  assert_string_equal(fy_rmq_ext(&c, "i"), "TAGS\001TagA\002KEYS\001k1\002");
  int64_t v;
  assert_int_equal(fy_rmq_ext_i64(&c, "d", &v), 0);
  assert_int_equal(v, 4);
  assert_int_equal(fy_rmq_ext_i64(&c, "e", &v), 0);
  assert_int_equal(v, 2);
  assert_int_equal(fy_rmq_ext_i64(&c, "g", &v), 0);
  assert_int_equal(v, 1700000000000LL);
  assert_int_equal(fy_rmq_ext_i64(&c, "l", &v), 0);
  assert_int_equal(v, 16);
  bool b = true;
  assert_int_equal(fy_rmq_ext_bool(&c, "k", &b), 0);
  assert_false(b);
  assert_int_equal(fy_rmq_ext_bool(&c, "m", &b), 0);
  assert_false(b);
  assert_null(fy_rmq_ext(&c, "z"));
  assert_int_equal(fy_rmq_ext_i64(&c, "z", &v), -ENOENT);
  assert_int_equal(fy_rmq_ext_bool(&c, "z", &b), -ENOENT);
  assert_int_equal(fy_rmq_ext_i64(&c, "a", &v), -EINVAL);
  assert_int_equal(fy_rmq_ext_bool(&c, "a", &b), -EINVAL);
  fy_rmq_cmd_free(&c);
  assert_int_equal(c.next, 0);
  fy_rmq_cmd_free(&c); /* twice is harmless */
  free(f);
}

/* Numbers as JSON numbers and header numbers as strings; ext values of every
 * scalar type; a remark. */
static void test_parse_json_numbers(void **state) {
  (void)state;
  const char *json =
      "{\"code\":\"11\",\"opaque\":\"-5\",\"flag\":\"2\",\"remark\":\"hi \\u00e9\","
      "\"serializeTypeCurrentRPC\":\"JSON\",\"unknown\":[1,{}],"
      "\"extFields\":{\"d\":4,\"g\":1700000000000,\"neg\":-3,\"k\":false,\"m\":true,"
      "\"x\":1.5,\"y\":2.0,\"n\":null,\"s\":\"str\"}}";
  size_t len;
  uint8_t *f = json_frame(json, NULL, &len);
  fy_rmq_cmd c;
  assert_int_equal(fy_rmq_parse(f, len, FRAME_MAX, &c), (ssize_t)len);
  assert_int_equal(c.code, 11);
  assert_int_equal(c.opaque, -5);
  assert_int_equal(c.flag, FY_RMQ_FLAG_ONEWAY);
  assert_int_equal(c.version, 0);
  assert_string_equal(c.language, "");
  assert_string_equal(c.remark, "hi \xc3\xa9");
  assert_int_equal(c.body_len, 0);
  assert_int_equal(c.next, 8); /* null is absent */
  assert_string_equal(fy_rmq_ext(&c, "d"), "4");
  assert_string_equal(fy_rmq_ext(&c, "g"), "1700000000000");
  assert_string_equal(fy_rmq_ext(&c, "neg"), "-3");
  assert_string_equal(fy_rmq_ext(&c, "k"), "false");
  assert_string_equal(fy_rmq_ext(&c, "m"), "true");
  assert_string_equal(fy_rmq_ext(&c, "x"), "1.5");
  assert_string_equal(fy_rmq_ext(&c, "y"), "2");
  assert_null(fy_rmq_ext(&c, "n"));
  assert_string_equal(fy_rmq_ext(&c, "s"), "str");
  bool b = false;
  assert_int_equal(fy_rmq_ext_bool(&c, "m", &b), 0);
  assert_true(b);
  int64_t v;
  assert_int_equal(fy_rmq_ext_i64(&c, "neg", &v), 0);
  assert_int_equal(v, -3);
  assert_int_equal(fy_rmq_ext_i64(&c, "x", &v), -EINVAL);
  fy_rmq_cmd_free(&c);
  free(f);
}

/* Type 1: code i16, language u8, version i16, opaque i32, flag i32,
 * remark i32 + bytes, ext i32 + (i16 key len, key, i32 val len, val)*. */
static const uint8_t BIN_HEADER[] = {
    0x00, 0x22,             /* code 34 HEART_BEAT */
    0x09,                   /* language GO */
    0x01, 0x75,             /* version 373 */
    0x00, 0x00, 0x01, 0x02, /* opaque 258 */
    0x00, 0x00, 0x00, 0x02, /* flag ONEWAY */
    0x00, 0x00, 0x00, 0x02, 'h', 'i',
    0x00, 0x00, 0x00, 0x14, /* ext: 20 bytes */
    0x00, 0x01, 'k', 0x00, 0x00, 0x00, 0x02, 'v', '1',
    0x00, 0x02, 'k', '2', 0x00, 0x00, 0x00, 0x03, '-', '4', '2',
};

static void test_parse_binary(void **state) {
  (void)state;
  size_t len;
  uint8_t *f = frame(FY_RMQ_ROCKETMQ, BIN_HEADER, sizeof BIN_HEADER, "{}", 2, &len);
  assert_int_equal(be32(f + 4), 0x01000000u | sizeof BIN_HEADER);
  fy_rmq_cmd c;
  assert_int_equal(fy_rmq_parse(f, len, FRAME_MAX, &c), (ssize_t)len);
  assert_int_equal(c.serialize, FY_RMQ_ROCKETMQ);
  assert_int_equal(c.code, FY_RMQ_REQ_HEART_BEAT);
  assert_string_equal(c.language, "GO");
  assert_int_equal(c.version, 373);
  assert_int_equal(c.opaque, 258);
  assert_int_equal(c.flag, FY_RMQ_FLAG_ONEWAY);
  assert_string_equal(c.remark, "hi");
  assert_int_equal(c.next, 2);
  assert_string_equal(c.ext[0].key, "k");
  assert_string_equal(c.ext[0].val, "v1");
  int64_t v;
  assert_int_equal(fy_rmq_ext_i64(&c, "k2", &v), 0);
  assert_int_equal(v, -42);
  assert_int_equal(c.body_len, 2);
  assert_memory_equal(c.body, "{}", 2);
  fy_rmq_cmd_free(&c);
  free(f);

  /* No remark, no ext, a negative code and an unknown language byte. */
  uint8_t bare[21] = {0xFF, 0xFE, 0x63, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1};
  f = frame(FY_RMQ_ROCKETMQ, bare, sizeof bare, NULL, 0, &len);
  assert_int_equal(fy_rmq_parse(f, len, FRAME_MAX, &c), (ssize_t)len);
  assert_int_equal(c.code, -2);
  assert_string_equal(c.language, "OTHER");
  assert_int_equal(c.opaque, 1);
  assert_int_equal(c.flag, FY_RMQ_FLAG_RESPONSE);
  assert_null(c.remark);
  assert_int_equal(c.next, 0);
  fy_rmq_cmd_free(&c);
  free(f);
}

static void expect_parse(const uint8_t *f, size_t len, ssize_t want) {
  fy_rmq_cmd c;
  memset(&c, 0xA5, sizeof c);
  ssize_t got = fy_rmq_parse(f, len, FRAME_MAX, &c);
  if (got != want)
    fail_msg("parse returned %zd, want %zd", got, want);
  if (got <= 0) {
    assert_int_equal(c.next, 0); /* zeroed: nothing to free */
    assert_null(c.remark);
  }
  fy_rmq_cmd_free(&c);
}

static void test_partial_input(void **state) {
  (void)state;
  size_t jlen, blen;
  uint8_t *j = json_frame(SEND_V2_STRINGS, "hello", &jlen);
  uint8_t *b = frame(FY_RMQ_ROCKETMQ, BIN_HEADER, sizeof BIN_HEADER, "xyz", 3, &blen);
  for (size_t n = 0; n < jlen; n++)
    expect_parse(j, n, 0);
  for (size_t n = 0; n < blen; n++)
    expect_parse(b, n, 0);
  /* Two frames back to back: the first is consumed alone, then the second. */
  uint8_t *two = malloc(jlen + blen);
  memcpy(two, j, jlen);
  memcpy(two + jlen, b, blen);
  fy_rmq_cmd c;
  assert_int_equal(fy_rmq_parse(two, jlen + blen, FRAME_MAX, &c), (ssize_t)jlen);
  assert_int_equal(c.code, 310);
  assert_int_equal(c.body_len, 5);
  fy_rmq_cmd_free(&c);
  assert_int_equal(fy_rmq_parse(two + jlen, blen, FRAME_MAX, &c), (ssize_t)blen);
  assert_int_equal(c.code, 34);
  fy_rmq_cmd_free(&c);
  free(two);
  free(j);
  free(b);
}

static void expect_json_error(const char *json, ssize_t want) {
  size_t len;
  uint8_t *f = json_frame(json, "body", &len);
  expect_parse(f, len, want);
  free(f);
}

static void expect_bin_error(const uint8_t *h, size_t hlen, ssize_t want) {
  size_t len;
  uint8_t *f = frame(FY_RMQ_ROCKETMQ, h, hlen, NULL, 0, &len);
  expect_parse(f, len, want);
  free(f);
}

static void test_malformed_frames(void **state) {
  (void)state;
  uint8_t f[64] = {0};
  /* total < 4: seen from the first 4 bytes. */
  put_be32(f, 3);
  expect_parse(f, 4, -FY_EFRAME_HEADER);
  /* total > frame_max: from the first 4 bytes, nothing allocated. */
  put_be32(f, FRAME_MAX + 1);
  expect_parse(f, 4, -FY_EFRAME_TOO_BIG);
  put_be32(f, 0xFFFFFFFFu);
  expect_parse(f, 8, -FY_EFRAME_TOO_BIG);
  /* Huge header length (24 bits, above FY_RMQ_HEADER_MAX) in a frame within frame_max. */
  put_be32(f, FRAME_MAX);
  put_be32(f + 4, FY_RMQ_HEADER_MAX + 1);
  expect_parse(f, 8, -FY_EFRAME_TOO_BIG);
  put_be32(f + 4, 0x00FFFFFFu);
  expect_parse(f, 8, -FY_EFRAME_TOO_BIG);
  /* Header length beyond the frame's total. */
  put_be32(f, 10);
  put_be32(f + 4, 7);
  expect_parse(f, 8, -FY_EFRAME_HEADER);
  put_be32(f + 4, 6); /* exactly total - 4 is fine: a header and no body, once complete */
  expect_parse(f, 8, 0);
  /* Unknown serialize types. */
  put_be32(f, 12);
  put_be32(f + 4, 0x02000002u);
  expect_parse(f, 8, -FY_EFRAME_HEADER);
  put_be32(f + 4, 0xFF000002u);
  expect_parse(f, 8, -FY_EFRAME_HEADER);
  /* total == 4: an empty JSON header is not a header. */
  put_be32(f, 4);
  put_be32(f + 4, 0);
  expect_parse(f, 8, -FY_EDECODE);
}

static void test_malformed_json(void **state) {
  (void)state;
  expect_json_error("hello", -FY_EDECODE);
  expect_json_error("{\"code\":1", -FY_EDECODE);
  expect_json_error("{\"code\":1} trailing", -FY_EDECODE);
  expect_json_error("[1,2]", -FY_EDECODE);
  expect_json_error("\"code\"", -FY_EDECODE);
  expect_json_error("{}", -FY_EDECODE);
  expect_json_error("{\"opaque\":1,\"flag\":0}", -FY_EDECODE);
  expect_json_error("{\"code\":null}", -FY_EDECODE);
  expect_json_error("{\"code\":[1]}", -FY_EDECODE);
  expect_json_error("{\"code\":\"1x\"}", -FY_EDECODE);
  expect_json_error("{\"code\":\" 1\"}", -FY_EDECODE);
  expect_json_error("{\"code\":\"\"}", -FY_EDECODE);
  expect_json_error("{\"code\":\"-\"}", -FY_EDECODE);
  expect_json_error("{\"code\":1.5}", -FY_EDECODE);
  expect_json_error("{\"code\":true}", -FY_EDECODE);
  expect_json_error("{\"code\":4294967296}", -FY_EDECODE);
  expect_json_error("{\"code\":\"2147483648\"}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"opaque\":{}}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"language\":9}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"remark\":3}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"extFields\":\"x\"}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"extFields\":[]}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"remark\":\"r\",\"extFields\":{\"a\":\"1\",\"b\":{\"c\":1}}}",
                    -FY_EDECODE);
  expect_json_error("{\"code\":1,\"extFields\":{\"a\":\"1\",\"b\":[\"x\"]}}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"extFields\":{\"a\":\"x\\u0000y\"}}", -FY_EDECODE);
  expect_json_error("{\"code\":1,\"remark\":\"\\ud800\"}", -FY_EDECODE);
  /* Limits: 64 ext fields pass, 65 do not. */
  char json[2048];
  for (int n = 64; n <= 65; n++) {
    size_t off = (size_t)snprintf(json, sizeof json, "{\"code\":1,\"extFields\":{");
    for (int i = 0; i < n; i++)
      off += (size_t)snprintf(json + off, sizeof json - off, "%s\"k%d\":\"v%d\"", i ? "," : "", i,
                              i);
    snprintf(json + off, sizeof json - off, "}}");
    size_t len;
    uint8_t *f = json_frame(json, NULL, &len);
    expect_parse(f, len, n == 64 ? (ssize_t)len : -FY_EDECODE);
    free(f);
  }
  /* Deep nesting is refused (jansson's depth limit), not recursed into without bound. */
  size_t depth = 4000;
  char *deep = malloc(16 + 2 * depth + 2);
  size_t off = (size_t)sprintf(deep, "{\"code\":1,\"x\":");
  memset(deep + off, '[', depth);
  memset(deep + off + depth, ']', depth);
  strcpy(deep + off + 2 * depth, "}");
  expect_json_error(deep, -FY_EDECODE);
  free(deep);
}

static void test_malformed_binary(void **state) {
  (void)state;
  /* Every cut of a valid binary header is refused (not read past). */
  for (size_t n = 0; n < sizeof BIN_HEADER; n++) {
    size_t len;
    uint8_t *f = frame(FY_RMQ_ROCKETMQ, BIN_HEADER, n, NULL, 0, &len);
    expect_parse(f, len, -FY_EDECODE);
    free(f);
  }
  /* One byte changed each (offsets in BIN_HEADER's comment layout). */
  static const struct { size_t off; uint8_t v; } bad[] = {
      {13, 0x80}, /* remark length negative */
      {16, 0x30}, /* remark length past the header */
      {22, 0x15}, /* ext length one past the header */
      {19, 0xFF}, /* ext length negative */
      {23, 0x80}, /* key length negative */
      {24, 0x20}, /* key length past the ext region */
      {29, 0x0E}, /* value length past the ext region */
      {26, 0x80}, /* value length negative */
      {31, '\0'}, /* NUL inside a value */
      {18, '\0'}, /* NUL inside the remark */
  };
  uint8_t h[sizeof BIN_HEADER];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memcpy(h, BIN_HEADER, sizeof h);
    h[bad[i].off] = bad[i].v;
    expect_bin_error(h, sizeof h, -FY_EDECODE);
  }
  /* An ext region cut inside the second entry (length 12 of 20). */
  memcpy(h, BIN_HEADER, sizeof h);
  h[22] = 12;
  expect_bin_error(h, sizeof h - 8, -FY_EDECODE);
  /* Bytes after the ext region are ignored, as RocketMQ does. */
  uint8_t longer[sizeof BIN_HEADER + 3];
  memcpy(longer, BIN_HEADER, sizeof BIN_HEADER);
  memset(longer + sizeof BIN_HEADER, 0xEE, 3);
  size_t len;
  uint8_t *f = frame(FY_RMQ_ROCKETMQ, longer, sizeof longer, NULL, 0, &len);
  expect_parse(f, len, (ssize_t)len);
  free(f);
  /* 65 distinct ext fields are refused; a repeated key replaces (last wins). */
  uint8_t many[21 + 65 * 8];
  memset(many, 0, 21);
  uint8_t *p = many + 21;
  for (int i = 0; i < 65; i++) {
    *p++ = 0;
    *p++ = 2;
    *p++ = 'k';
    *p++ = (uint8_t)('0' + i % 64);
    p += put_be32(p, 0);
  }
  put_be32(many + 17, 64 * 8);
  f = frame(FY_RMQ_ROCKETMQ, many, 21 + 64 * 8, NULL, 0, &len);
  expect_parse(f, len, (ssize_t)len);
  free(f);
  many[21 + 64 * 8 + 3] = '~'; /* a 65th distinct key */
  put_be32(many + 17, 65 * 8);
  expect_bin_error(many, sizeof many, -FY_EDECODE);
  many[21 + 64 * 8 + 3] = '0'; /* the 65th repeats k0 */
  many[21 + 64 * 8 + 7] = 1;
  uint8_t dup[sizeof many + 1];
  memcpy(dup, many, sizeof many);
  dup[sizeof many] = 'z';
  put_be32(dup + 17, 65 * 8 + 1);
  f = frame(FY_RMQ_ROCKETMQ, dup, sizeof dup, NULL, 0, &len);
  fy_rmq_cmd c;
  assert_int_equal(fy_rmq_parse(f, len, FRAME_MAX, &c), (ssize_t)len);
  assert_int_equal(c.next, 64);
  assert_string_equal(fy_rmq_ext(&c, "k0"), "z");
  fy_rmq_cmd_free(&c);
  free(f);
}

static void expect_frame(const uint8_t *got, size_t got_len, uint8_t type, const char *hdr,
                         size_t hlen, uint32_t body_len) {
  assert_int_equal(got_len, 8 + hlen);
  assert_int_equal(be32(got), 4 + hlen + body_len);
  assert_int_equal(be32(got + 4), (uint32_t)type << 24 | (uint32_t)hlen);
  assert_memory_equal(got + 8, hdr, hlen);
}

static void test_encode_json_response(void **state) {
  (void)state;
  size_t len;
  uint8_t *f = json_frame(SEND_V2_STRINGS, "hello", &len);
  fy_rmq_cmd req;
  assert_int_equal(fy_rmq_parse(f, len, FRAME_MAX, &req), (ssize_t)len);
  fy_rmq_out o;
  fy_rmq_out_response(&o, &req, FY_RMQ_RESP_SUCCESS, NULL);
  assert_int_equal(fy_rmq_out_str(&o, "msgId", "0A00000100002A9F0000000000001000"), 0);
  assert_int_equal(fy_rmq_out_i64(&o, "queueId", 2), 0);
  assert_int_equal(fy_rmq_out_i64(&o, "queueOffset", -1), 0);
  assert_int_equal(fy_rmq_out_str(&o, "msgId", "AB"), 0); /* replaces, keeps its place */
  uint8_t *out;
  size_t out_len;
  assert_int_equal(fy_rmq_out_encode(&o, 0, &out, &out_len), 0);
  const char *want = "{\"code\":0,\"extFields\":{\"msgId\":\"AB\",\"queueId\":\"2\","
                     "\"queueOffset\":\"-1\"},\"flag\":1,\"language\":\"JAVA\",\"opaque\":7,"
                     "\"serializeTypeCurrentRPC\":\"JSON\",\"version\":401}";
  expect_frame(out, out_len, FY_RMQ_JSON, want, strlen(want), 0);
  free(out);
  fy_rmq_out_free(&o);

  /* An error with a remark, no ext fields, a body to follow, escaping and a
   * value that is not UTF-8. */
  fy_rmq_out_response(&o, &req, FY_RMQ_RESP_TOPIC_NOT_EXIST, "topic[%s] not exist, \"%d\"",
                      "T\xc3\xa9", 17);
  assert_int_equal(fy_rmq_out_str(&o, "bad", "a\xff" "b\xc3"), 0);
  assert_int_equal(fy_rmq_out_encode(&o, 10, &out, &out_len), 0);
  want = "{\"code\":17,\"extFields\":{\"bad\":\"a?b?\"},\"flag\":1,\"language\":\"JAVA\","
         "\"opaque\":7,\"remark\":\"topic[T\xc3\xa9] not exist, \\\"17\\\"\","
         "\"serializeTypeCurrentRPC\":\"JSON\",\"version\":401}";
  expect_frame(out, out_len, FY_RMQ_JSON, want, strlen(want), 10);
  free(out);
  fy_rmq_out_free(&o);

  fy_rmq_out_response(&o, &req, 1, NULL);
  assert_int_equal(fy_rmq_out_encode(&o, 0, &out, &out_len), 0);
  want = "{\"code\":1,\"extFields\":{},\"flag\":1,\"language\":\"JAVA\",\"opaque\":7,"
         "\"serializeTypeCurrentRPC\":\"JSON\",\"version\":401}";
  expect_frame(out, out_len, FY_RMQ_JSON, want, strlen(want), 0);
  free(out);
  fy_rmq_out_free(&o);
  fy_rmq_cmd_free(&req);
  free(f);
}

static void test_encode_binary_response(void **state) {
  (void)state;
  size_t len;
  uint8_t *f = frame(FY_RMQ_ROCKETMQ, BIN_HEADER, sizeof BIN_HEADER, NULL, 0, &len);
  fy_rmq_cmd req;
  assert_int_equal(fy_rmq_parse(f, len, FRAME_MAX, &req), (ssize_t)len);
  fy_rmq_out o;
  fy_rmq_out_response(&o, &req, FY_RMQ_RESP_SYSTEM_BUSY, "ok");
  assert_int_equal(fy_rmq_out_str(&o, "a", "bc"), 0);
  uint8_t *out;
  size_t out_len;
  assert_int_equal(fy_rmq_out_encode(&o, 5, &out, &out_len), 0);
  static const uint8_t want[] = {
      0x00, 0x02,             /* code SYSTEM_BUSY */
      0x00,                   /* JAVA */
      0x01, 0x91,             /* version 401 */
      0x00, 0x00, 0x01, 0x02, /* opaque echoed */
      0x00, 0x00, 0x00, 0x01, /* RESPONSE */
      0x00, 0x00, 0x00, 0x02, 'o', 'k',
      0x00, 0x00, 0x00, 0x09, 0x00, 0x01, 'a', 0x00, 0x00, 0x00, 0x02, 'b', 'c',
  };
  expect_frame(out, out_len, FY_RMQ_ROCKETMQ, (const char *)want, sizeof want, 5);
  free(out);
  fy_rmq_out_free(&o);
  fy_rmq_cmd_free(&req);
  free(f);
}

/* Requests built, encoded, given a body and parsed back, in both encodings. */
static void test_round_trip(void **state) {
  (void)state;
  for (uint8_t ser = 0; ser <= 1; ser++) {
    fy_rmq_out o;
    fy_rmq_out_request(&o, FY_RMQ_REQ_NOTIFY_CONSUMER_IDS_CHANGED, -77, ser, true);
    assert_int_equal(o.flag, FY_RMQ_FLAG_ONEWAY);
    assert_int_equal(fy_rmq_out_str(&o, "consumerGroup", "CG \"q\" \xe4\xb8\xad"), 0);
    assert_int_equal(fy_rmq_out_i64(&o, "big", INT64_MIN), 0);
    assert_int_equal(fy_rmq_out_str(&o, "empty", ""), 0);
    uint8_t *hdr;
    size_t hlen;
    assert_int_equal(fy_rmq_out_encode(&o, 3, &hdr, &hlen), 0);
    uint8_t *f = malloc(hlen + 3);
    memcpy(f, hdr, hlen);
    memcpy(f + hlen, "abc", 3);
    fy_rmq_cmd c;
    assert_int_equal(fy_rmq_parse(f, hlen + 3, FRAME_MAX, &c), (ssize_t)(hlen + 3));
    assert_int_equal(c.serialize, ser);
    assert_int_equal(c.code, 40);
    assert_int_equal(c.opaque, -77);
    assert_int_equal(c.flag, FY_RMQ_FLAG_ONEWAY);
    assert_int_equal(c.version, FY_RMQ_VERSION);
    assert_string_equal(c.language, "JAVA");
    assert_null(c.remark);
    assert_int_equal(c.next, 3);
    assert_string_equal(fy_rmq_ext(&c, "consumerGroup"), "CG \"q\" \xe4\xb8\xad");
    int64_t v;
    assert_int_equal(fy_rmq_ext_i64(&c, "big", &v), 0);
    assert_true(v == INT64_MIN);
    assert_string_equal(fy_rmq_ext(&c, "empty"), "");
    assert_int_equal(c.body_len, 3);
    assert_memory_equal(c.body, "abc", 3);
    fy_rmq_cmd_free(&c);
    free(f);
    free(hdr);
    fy_rmq_out_free(&o);
  }
}

static void test_out_limits(void **state) {
  (void)state;
  fy_rmq_out o;
  fy_rmq_out_request(&o, 1, 1, FY_RMQ_JSON, false);
  char key[80];
  for (int i = 0; i < FY_RMQ_EXT_MAX; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(fy_rmq_out_i64(&o, key, i), 0);
  }
  assert_int_equal(fy_rmq_out_str(&o, "one-more", "x"), -ENOSPC);
  assert_int_equal(fy_rmq_out_str(&o, "k5", "replaced"), 0); /* existing keys still update */
  assert_int_equal(o.next, FY_RMQ_EXT_MAX);
  assert_string_equal(o.ext[5].val, "replaced");
  memset(key, 'k', 64);
  key[64] = '\0';
  assert_int_equal(fy_rmq_out_str(&o, key, "x"), -EINVAL);
  assert_int_equal(fy_rmq_out_str(&o, "", "x"), -EINVAL);
  fy_rmq_out_free(&o);
  assert_int_equal(o.next, 0);

  /* The remark is cut at 511 bytes, never inside a UTF-8 character. */
  fy_rmq_cmd req;
  memset(&req, 0, sizeof req);
  req.opaque = 3;
  char longs[600];
  memset(longs, 'a', 510);
  strcpy(longs + 510, "\xc3\xa9tail"); /* é straddles the limit */
  fy_rmq_out_response(&o, &req, 1, "%s", longs);
  assert_true(o.has_remark);
  assert_int_equal(strlen(o.remark), 510);
  memset(longs, 'a', 509);
  strcpy(longs + 509, "\xc3\xa9tail"); /* é ends exactly at the limit */
  fy_rmq_out_response(&o, &req, 1, "%s", longs);
  assert_int_equal(strlen(o.remark), 511);
  memset(longs, 'a', 509);
  strcpy(longs + 509, "\xe4\xb8\xadtail"); /* a 3-byte character cut after 2 */
  fy_rmq_out_response(&o, &req, 1, "%s", longs);
  assert_int_equal(strlen(o.remark), 509);
  fy_rmq_out_response(&o, &req, 1, NULL);
  assert_false(o.has_remark);
}

/* A fy_msg with every field distinct. */
static struct fy_msg sample_msg(bool v6, const char *topic) {
  struct fy_msg m = {0};
  m.queue_id = 3;
  m.flag = 0x11223344;
  m.queue_offset = 0x0102030405060708ULL;
  m.phys_offset = 4096;
  m.sys_flag = FY_SYSFLAG_COMPRESSED | FY_SYSFLAG_INNER_BATCH | FY_SYSFLAG_STOREHOST_V6;
  m.born_ts_ms = 1764096000123;
  m.born_host.v6 = v6;
  m.born_host.port = 40000;
  m.store_host.v6 = v6;
  m.store_host.port = 10911;
  for (int i = 0; i < 16; i++) {
    m.born_host.ip[i] = (uint8_t)(0x10 + i);
    m.store_host.ip[i] = (uint8_t)(0x80 + i);
  }
  m.store_ts_ms = 1764096000456;
  m.reconsume_times = 2;
  m.prepared_tx_offset = 99;
  m.body = (const uint8_t *)"123456789";
  m.body_len = 9;
  m.topic = topic;
  m.topic_len = (uint16_t)strlen(topic);
  m.props = "TAGS\001TagA\002";
  m.props_len = 10;
  return m;
}

static void check_msg(const struct fy_msg *m, bool v6) {
  uint32_t host = v6 ? 20 : 8;
  bool v2 = m->topic_len > 127;
  uint32_t want_size = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + host + 8 + host + 4 + 8 + 4 + 9 +
                       (v2 ? 2 : 1) + m->topic_len + 2 + 10;
  assert_int_equal(fy_rmq_msg_size(m), want_size);
  uint8_t *b = malloc(want_size);
  assert_int_equal(fy_rmq_msg_encode(m, b), want_size);
  assert_int_equal(be32(b + 0), want_size);
  assert_int_equal(be32(b + 4), v2 ? 0xDAA320ABu : 0xDAA320A7u);
  assert_int_equal(be32(b + 8), 0xCBF43926u & 0x7FFFFFFFu); /* CRC32("123456789") */
  assert_int_equal(be32(b + 12), 3);
  assert_int_equal(be32(b + 16), 0x11223344u);
  assert_true(be64(b + 20) == 0x0102030405060708ULL);
  assert_int_equal(be64(b + 28), 4096);
  /* Compression and batch bits pass through; host bits follow the hosts. */
  assert_int_equal(be32(b + 36), 0x81u | (v6 ? 0x30u : 0));
  assert_int_equal(be64(b + 40), 1764096000123ULL);
  size_t off = 48;
  assert_int_equal(b[off], 0x10);
  assert_int_equal(b[off + (v6 ? 15 : 3)], v6 ? 0x1F : 0x13);
  assert_int_equal(be32(b + off + host - 4), 40000);
  off += host;
  assert_int_equal(be64(b + off), 1764096000456ULL);
  off += 8;
  assert_int_equal(b[off], 0x80);
  assert_int_equal(b[off + (v6 ? 15 : 3)], v6 ? 0x8F : 0x83);
  assert_int_equal(be32(b + off + host - 4), 10911);
  off += host;
  assert_int_equal(be32(b + off), 2);
  assert_int_equal(be64(b + off + 4), 99);
  off += 12;
  assert_int_equal(be32(b + off), 9);
  assert_memory_equal(b + off + 4, "123456789", 9);
  off += 13;
  if (v2) {
    assert_int_equal(be16(b + off), m->topic_len);
    off += 2;
  } else {
    assert_int_equal(b[off], m->topic_len);
    off += 1;
  }
  assert_memory_equal(b + off, m->topic, m->topic_len);
  off += m->topic_len;
  assert_int_equal(be16(b + off), 10);
  assert_memory_equal(b + off + 2, "TAGS\001TagA\002", 10);
  assert_int_equal(off + 12, want_size);

  /* Decodes back to the same fields; prefixes ask for more; damage is refused. */
  struct fy_msg d;
  assert_int_equal(fy_rmq_msg_decode(b, want_size, &d), want_size);
  assert_int_equal(d.total_size, want_size);
  assert_int_equal(d.queue_id, m->queue_id);
  assert_int_equal(d.flag, m->flag);
  assert_true(d.queue_offset == m->queue_offset);
  assert_int_equal(d.phys_offset, m->phys_offset);
  assert_int_equal(d.sys_flag, 0x81u | (v6 ? 0x30u : 0));
  assert_int_equal(d.born_ts_ms, m->born_ts_ms);
  assert_int_equal(d.store_ts_ms, m->store_ts_ms);
  assert_int_equal(d.born_host.v6, v6);
  assert_memory_equal(d.born_host.ip, m->born_host.ip, v6 ? 16 : 4);
  assert_int_equal(d.born_host.port, 40000);
  assert_memory_equal(d.store_host.ip, m->store_host.ip, v6 ? 16 : 4);
  assert_int_equal(d.store_host.port, 10911);
  assert_int_equal(d.reconsume_times, 2);
  assert_int_equal(d.prepared_tx_offset, 99);
  assert_int_equal(d.body_len, 9);
  assert_memory_equal(d.body, "123456789", 9);
  assert_int_equal(d.topic_len, m->topic_len);
  assert_memory_equal(d.topic, m->topic, m->topic_len);
  assert_int_equal(d.props_len, 10);
  assert_memory_equal(d.props, m->props, 10);
  for (size_t n = 0; n < want_size; n += 5)
    assert_int_equal(fy_rmq_msg_decode(b, n, &d), -EAGAIN);
  size_t body_off = 48 + host + 8 + host + 4 + 8 + 4;
  b[body_off + 4] ^= 1; /* a body byte: the CRC no longer matches */
  assert_int_equal(fy_rmq_msg_decode(b, want_size, &d), -FY_EDECODE);
  b[body_off + 4] ^= 1;
  b[7] ^= 0x10; /* magic */
  assert_int_equal(fy_rmq_msg_decode(b, want_size, &d), -FY_EDECODE);
  b[7] ^= 0x10;
  put_be32(b, want_size + 1); /* sizes that do not add up */
  assert_int_equal(fy_rmq_msg_decode(b, want_size + 1, &d), -FY_EDECODE);
  put_be32(b, want_size);
  assert_int_equal(fy_rmq_msg_decode(b, want_size, &d), want_size);
  free(b);
}

static void test_msg_layout(void **state) {
  (void)state;
  struct fy_msg m = sample_msg(false, "TopicTest");
  check_msg(&m, false);
  m = sample_msg(true, "TopicTest");
  check_msg(&m, true);
  char longt[201];
  memset(longt, 't', 200);
  longt[200] = '\0';
  m = sample_msg(false, longt);
  check_msg(&m, false);
  char t127[128];
  memset(t127, 'u', 127);
  t127[127] = '\0';
  m = sample_msg(false, t127);
  check_msg(&m, false); /* 127 bytes still fit the 4.x layout */
  /* Empty body and props. */
  m = sample_msg(false, "T");
  m.body_len = 0;
  m.props_len = 0;
  assert_int_equal(fy_rmq_msg_size(&m), 91 + 1);
  uint8_t b[92];
  assert_int_equal(fy_rmq_msg_encode(&m, b), 92);
  assert_int_equal(be32(b + 8), 0);
  /* A body too large for a Java int total. */
  m.body_len = 0x7FFFFFF0u;
  assert_int_equal(fy_rmq_msg_size(&m), 0);
}

/* tests/fuzz/corpus/remoting/pull_body was laid out by
 * tests/fuzz/make_corpus_remoting.py from the protocol with Python's zlib
 * CRC32: an encoder-independent check of the layout, both ways. */
static void test_msg_python_layout(void **state) {
  (void)state;
  FILE *f = fopen(FY_SOURCE_DIR "/tests/fuzz/corpus/remoting/pull_body", "rb");
  assert_non_null(f);
  static uint8_t buf[4096];
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  assert_int_equal(len, 115 + 116 + 322);
  static const struct { uint16_t topic_len; uint32_t body_len; bool v6; } want[] = {
      {9, 5, false}, {1, 0, true}, {200, 30, false}};
  size_t off = 0;
  for (size_t i = 0; i < 3; i++) {
    struct fy_msg m;
    int64_t n = fy_rmq_msg_decode(buf + off, len - off, &m);
    assert_true(n > 0);
    assert_int_equal(m.topic_len, want[i].topic_len);
    assert_int_equal(m.body_len, want[i].body_len);
    assert_int_equal(m.born_host.v6, want[i].v6);
    assert_int_equal(m.store_host.port, 10911);
    assert_int_equal(m.queue_offset, 5);
    assert_int_equal(m.phys_offset, 4096);
    uint8_t again[512];
    assert_int_equal(fy_rmq_msg_size(&m), n);
    assert_int_equal(fy_rmq_msg_encode(&m, again), n);
    assert_memory_equal(again, buf + off, (size_t)n);
    off += (size_t)n;
  }
  assert_int_equal(off, len);
}

static void test_crc32(void **state) {
  (void)state;
  assert_int_equal(fy_rmq_crc32(0, "123456789", 9), 0xCBF43926u);
  assert_int_equal(fy_rmq_crc32(0, "", 0), 0);
  assert_int_equal(fy_rmq_crc32(0, "The quick brown fox jumps over the lazy dog", 43),
                   0x414FA339u);
  uint8_t buf[300];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (uint8_t)(i * 13 + 1);
  /* Chaining matches one pass on every split, across the 8-byte fast path. */
  uint32_t whole = fy_rmq_crc32(0, buf, sizeof buf);
  for (size_t cut = 0; cut <= sizeof buf; cut += 7)
    assert_int_equal(fy_rmq_crc32(fy_rmq_crc32(0, buf, cut), buf + cut, sizeof buf - cut), whole);
}

static void test_offset_msg_id(void **state) {
  (void)state;
  const uint8_t ip[4] = {10, 0, 0, 1};
  char id[33];
  fy_rmq_offset_msg_id(ip, 10911, 0x1000, id);
  assert_string_equal(id, "0A00000100002A9F0000000000001000");
  fy_rmq_offset_msg_id(ip, 10911, 0xFEDCBA9876543210ULL, id);
  assert_string_equal(id, "0A00000100002A9FFEDCBA9876543210");
  uint8_t ip2[4];
  uint32_t port;
  uint64_t phys;
  assert_int_equal(fy_rmq_offset_msg_id_parse(id, ip2, &port, &phys), 0);
  assert_memory_equal(ip2, ip, 4);
  assert_int_equal(port, 10911);
  assert_true(phys == 0xFEDCBA9876543210ULL);
  assert_int_equal(fy_rmq_offset_msg_id_parse("0a00000100002a9ffedcba9876543210", ip2, &port,
                                              &phys), 0);
  assert_true(phys == 0xFEDCBA9876543210ULL);
  assert_int_equal(fy_rmq_offset_msg_id_parse("0A00000100002A9FFEDCBA987654321", ip2, &port,
                                              &phys), -EINVAL);
  assert_int_equal(fy_rmq_offset_msg_id_parse("0A00000100002A9FFEDCBA98765432100", ip2, &port,
                                              &phys), -EINVAL);
  assert_int_equal(fy_rmq_offset_msg_id_parse("0A00000100002A9FFEDCBA987654321G", ip2, &port,
                                              &phys), -EINVAL);
  assert_int_equal(fy_rmq_offset_msg_id_parse(NULL, ip2, &port, &phys), -EINVAL);
}

/* One batch entry laid out as MessageDecoder.encodeMessage does (4.9:
 * MAGIC and BODYCRC 0). */
static size_t batch_entry(uint8_t *p, int32_t flag, const char *body, const char *props) {
  size_t bl = strlen(body), pl = strlen(props);
  size_t total = 4 + 4 + 4 + 4 + 4 + bl + 2 + pl;
  put_be32(p, (uint32_t)total);
  put_be32(p + 4, 0);
  put_be32(p + 8, 0);
  put_be32(p + 12, (uint32_t)flag);
  put_be32(p + 16, (uint32_t)bl);
  memcpy(p + 20, body, bl);
  p[20 + bl] = (uint8_t)(pl >> 8);
  p[21 + bl] = (uint8_t)pl;
  memcpy(p + 22 + bl, props, pl);
  return total;
}

static void test_batch(void **state) {
  (void)state;
  uint8_t buf[256];
  size_t n1 = batch_entry(buf, 7, "first", "KEYS\001k1\002");
  size_t n2 = batch_entry(buf + n1, -1, "", "");
  size_t n3 = batch_entry(buf + n1 + n2, 0, "third body", "UNIQ_KEY\001u\002");
  const uint8_t *p = buf;
  size_t len = n1 + n2 + n3;
  fy_rmq_batch_msg m;
  assert_int_equal(fy_rmq_batch_next(&p, &len, &m), 1);
  assert_int_equal(m.flag, 7);
  assert_int_equal(m.body_len, 5);
  assert_ptr_equal(m.body, buf + 20); /* no copy */
  assert_memory_equal(m.body, "first", 5);
  assert_int_equal(m.props_len, 8);
  assert_memory_equal(m.props, "KEYS\001k1\002", 8);
  assert_int_equal(fy_rmq_batch_next(&p, &len, &m), 1);
  assert_int_equal(m.flag, -1);
  assert_int_equal(m.body_len, 0);
  assert_int_equal(m.props_len, 0);
  assert_int_equal(fy_rmq_batch_next(&p, &len, &m), 1);
  assert_memory_equal(m.body, "third body", 10);
  assert_memory_equal(m.props, "UNIQ_KEY\001u\002", 11);
  assert_int_equal(len, 0);
  assert_int_equal(fy_rmq_batch_next(&p, &len, &m), 0);

  /* Malformed: every cut, total too small / too large, body or props
   * lengths that do not add up. *p and *len stay put. */
  for (size_t cut = 1; cut < n1; cut++) {
    p = buf;
    len = cut;
    assert_int_equal(fy_rmq_batch_next(&p, &len, &m), -FY_EDECODE);
    assert_ptr_equal(p, buf);
    assert_int_equal(len, cut);
  }
  uint8_t bad[64];
  size_t nb = batch_entry(bad, 0, "body", "pp");
  struct { size_t off; uint32_t v; } cases[] = {
      {0, 21}, {0, (uint32_t)nb + 1}, {0, 0xFFFFFFFFu}, {16, 5}, {16, 0x80000000u}, {16, 3},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    batch_entry(bad, 0, "body", "pp");
    put_be32(bad + cases[i].off, cases[i].v);
    p = bad;
    len = nb + 8; /* room beyond the entry, so only the entry's own fields decide */
    memset(bad + nb, 0, 8);
    assert_int_equal(fy_rmq_batch_next(&p, &len, &m), -FY_EDECODE);
  }
  batch_entry(bad, 0, "body", "pp");
  bad[24] = 0x00;
  bad[25] = 0x03; /* props length one too many */
  p = bad;
  len = nb + 1;
  assert_int_equal(fy_rmq_batch_next(&p, &len, &m), -FY_EDECODE);
}

static void test_tags(void **state) {
  (void)state;
  /* expr -> result and the tags, in order, joined by ',' ("" when none). */
  static const struct {
    const char *expr;
    int want;
    const char *tags;
  } cases[] = {
      {"TagA || TagB", 2, "TagA,TagB"},
      {"TagA", 1, "TagA"},
      {"a||b||\tc ", 3, "a,b,c"},
      {"a || a || b", 2, "a,b"},
      {"a|||b", 2, "a,|b"}, /* split on the first "||", as Java's split does */
      /* "All": NULL, empty, blank, or an alternative "*". */
      {"*", 0, ""},
      {" * ", 0, ""},
      {"", 0, ""},
      {"   ", 0, ""},
      {NULL, 0, ""},
      {"a || *", 0, ""},
      {"|| *", 0, ""},
      /* Empty alternatives are skipped (RocketMQ's FilterAPI). */
      {"a || || b", 2, "a,b"},
      {"TagA ||", 1, "TagA"},
      {"|| a", 1, "a"},
      {"||||a||  ||", 1, "a"},
      {"a||||b||||c||||d", 4, "a,b,c,d"},
      /* Separators only: no tag at all. */
      {"||", -EINVAL, ""},
      {" || ", -EINVAL, ""},
      {"|| ||||", -EINVAL, ""},
      /* Limits: 4 tags, 64 bytes of buffer. */
      {"a||b||c||d||e", -E2BIG, ""},
      {"a||b||c||d", 4, "a,b,c,d"},
  };
  char buf[64], joined[64];
  const char *tags[4];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int r = fy_rmq_tags_parse(cases[i].expr, buf, sizeof buf, tags, 4);
    size_t len = 0;
    joined[0] = '\0';
    for (int k = 0; k < r; k++)
      len += (size_t)snprintf(joined + len, sizeof joined - len, "%s%s", k ? "," : "", tags[k]);
    if (r != cases[i].want || strcmp(joined, cases[i].tags) != 0)
      fail_msg("'%s': %d [%s], want %d [%s]", cases[i].expr ? cases[i].expr : "(null)", r, joined,
               cases[i].want, cases[i].tags);
  }
  assert_int_equal(fy_rmq_tags_parse("TagA || TagB", buf, 12, tags, 4), -ENOSPC);
  assert_int_equal(fy_rmq_tags_parse("TagA || TagB", buf, 13, tags, 4), 2);
}

static void test_tables(void **state) {
  (void)state;
  static const struct { int code; int want; } req[] = {
      {FY_RMQ_REQ_SEND_MESSAGE, 10}, {FY_RMQ_REQ_PULL_MESSAGE, 11},
      {FY_RMQ_REQ_QUERY_MESSAGE, 12}, {FY_RMQ_REQ_QUERY_CONSUMER_OFFSET, 14},
      {FY_RMQ_REQ_UPDATE_CONSUMER_OFFSET, 15}, {FY_RMQ_REQ_UPDATE_AND_CREATE_TOPIC, 17},
      {FY_RMQ_REQ_GET_ALL_TOPIC_CONFIG, 21}, {FY_RMQ_REQ_GET_BROKER_RUNTIME_INFO, 28},
      {FY_RMQ_REQ_SEARCH_OFFSET_BY_TIMESTAMP, 29}, {FY_RMQ_REQ_GET_MAX_OFFSET, 30},
      {FY_RMQ_REQ_GET_MIN_OFFSET, 31}, {FY_RMQ_REQ_GET_EARLIEST_MSG_STORETIME, 32},
      {FY_RMQ_REQ_VIEW_MESSAGE_BY_ID, 33}, {FY_RMQ_REQ_HEART_BEAT, 34},
      {FY_RMQ_REQ_UNREGISTER_CLIENT, 35}, {FY_RMQ_REQ_CONSUMER_SEND_MSG_BACK, 36},
      {FY_RMQ_REQ_GET_CONSUMER_LIST_BY_GROUP, 38}, {FY_RMQ_REQ_NOTIFY_CONSUMER_IDS_CHANGED, 40},
      {FY_RMQ_REQ_LOCK_BATCH_MQ, 41}, {FY_RMQ_REQ_UNLOCK_BATCH_MQ, 42},
      {FY_RMQ_REQ_REGISTER_BROKER, 103}, {FY_RMQ_REQ_GET_ROUTEINFO_BY_TOPIC, 105},
      {FY_RMQ_REQ_GET_BROKER_CLUSTER_INFO, 106}, {FY_RMQ_REQ_GET_ALL_TOPIC_LIST_FROM_NAMESERVER, 206},
      {FY_RMQ_REQ_GET_CONSUME_STATS, 208}, {FY_RMQ_REQ_DELETE_TOPIC_IN_BROKER, 215},
      {FY_RMQ_REQ_DELETE_TOPIC_IN_NAMESRV, 216}, {FY_RMQ_REQ_SEND_MESSAGE_V2, 310},
      {FY_RMQ_REQ_SEND_BATCH_MESSAGE, 320},
      {FY_RMQ_RESP_SUCCESS, 0}, {FY_RMQ_RESP_SYSTEM_ERROR, 1}, {FY_RMQ_RESP_SYSTEM_BUSY, 2},
      {FY_RMQ_RESP_REQUEST_CODE_NOT_SUPPORTED, 3}, {FY_RMQ_RESP_FLUSH_DISK_TIMEOUT, 10},
      {FY_RMQ_RESP_SLAVE_NOT_AVAILABLE, 11}, {FY_RMQ_RESP_FLUSH_SLAVE_TIMEOUT, 12},
      {FY_RMQ_RESP_MESSAGE_ILLEGAL, 13}, {FY_RMQ_RESP_SERVICE_NOT_AVAILABLE, 14},
      {FY_RMQ_RESP_VERSION_NOT_SUPPORTED, 15}, {FY_RMQ_RESP_NO_PERMISSION, 16},
      {FY_RMQ_RESP_TOPIC_NOT_EXIST, 17}, {FY_RMQ_RESP_PULL_NOT_FOUND, 19},
      {FY_RMQ_RESP_PULL_RETRY_IMMEDIATELY, 20}, {FY_RMQ_RESP_PULL_OFFSET_MOVED, 21},
      {FY_RMQ_RESP_QUERY_NOT_FOUND, 22}, {FY_RMQ_RESP_SUBSCRIPTION_NOT_EXIST, 24},
      {FY_RMQ_RESP_SUBSCRIPTION_NOT_LATEST, 25}, {FY_RMQ_RESP_CONSUMER_NOT_ONLINE, 206},
  };
  for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
    assert_int_equal(req[i].code, req[i].want);
  assert_string_equal(fy_rmq_req_name(310), "SEND_MESSAGE_V2");
  assert_string_equal(fy_rmq_req_name(105), "GET_ROUTEINFO_BY_TOPIC");
  assert_null(fy_rmq_req_name(9999));
  assert_string_equal(fy_rmq_resp_name(17), "TOPIC_NOT_EXIST");
  assert_null(fy_rmq_resp_name(-1));

  static const char *const v2[][2] = {
      {"producerGroup", "a"}, {"topic", "b"}, {"defaultTopic", "c"},
      {"defaultTopicQueueNums", "d"}, {"queueId", "e"}, {"sysFlag", "f"},
      {"bornTimestamp", "g"}, {"flag", "h"}, {"properties", "i"}, {"reconsumeTimes", "j"},
      {"unitMode", "k"}, {"maxReconsumeTimes", "l"}, {"batch", "m"},
  };
  for (size_t i = 0; i < sizeof v2 / sizeof v2[0]; i++)
    assert_string_equal(fy_rmq_send_v2_field(v2[i][0]), v2[i][1]);
  assert_null(fy_rmq_send_v2_field("nope"));
  assert_null(fy_rmq_send_v2_field(""));
  assert_null(fy_rmq_send_v2_field("topicX"));      /* a known name's prefix, longer */
  assert_null(fy_rmq_send_v2_field("topi"));        /* and shorter */
  assert_null(fy_rmq_send_v2_field("producerGroupX"));
  assert_null(fy_rmq_send_v2_field("Topic"));       /* names are case-sensitive */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_json_send_v2_strings),
      cmocka_unit_test(test_parse_json_numbers),
      cmocka_unit_test(test_parse_binary),
      cmocka_unit_test(test_partial_input),
      cmocka_unit_test(test_malformed_frames),
      cmocka_unit_test(test_malformed_json),
      cmocka_unit_test(test_malformed_binary),
      cmocka_unit_test(test_encode_json_response),
      cmocka_unit_test(test_encode_binary_response),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_out_limits),
      cmocka_unit_test(test_msg_layout),
      cmocka_unit_test(test_msg_python_layout),
      cmocka_unit_test(test_crc32),
      cmocka_unit_test(test_offset_msg_id),
      cmocka_unit_test(test_batch),
      cmocka_unit_test(test_tags),
      cmocka_unit_test(test_tables),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
