/*
 * RocketMQ remoting commands: frame parsing, the two header encodings (JSON
 * and RocketMQ's binary layout) in both directions, ext-field access, and
 * the small protocol tables (codes, SEND_MESSAGE_V2 short names, tags).
 *
 * Why lenient: the clients Ferry must serve (the Java client, ali-ons, the
 * Go and C++ clients) disagree on details RocketMQ's own fastjson parser
 * tolerates: numbers sent as strings, ext values sent as numbers or
 * booleans, null for absent. Everything else is refused with a negative
 * code, never trusted: a frame's lengths are checked against the limits
 * from its first 8 bytes before anything is allocated, and a header
 * allocates at most a small multiple of its own size.
 */
#include "remoting/remoting.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"

#define BIN_FIXED_LEN 21u /* code 2, language 1, version 2, opaque 4, flag 4, remark len 4, ext len 4 */
#define FRAME_TYPE_SHIFT 24
#define FRAME_HLEN_MASK 0xFFFFFFu

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint8_t *wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return p + 2;
}
static uint8_t *wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return p + 4;
}

/* RocketMQ's LanguageCode byte values. */
static const char *const languages[] = {"JAVA",   "CPP",  "DOTNET", "PYTHON", "DELPHI",
                                        "ERLANG", "RUBY", "OTHER",  "HTTP",   "GO",
                                        "PHP",    "OMS",  "RUST"};
#define NLANGUAGES (sizeof languages / sizeof languages[0])

/* ---- parsing ----------------------------------------------------------- */

void fy_rmq_cmd_free(fy_rmq_cmd *cmd) {
  free(cmd->remark);
  free(cmd->arena); /* the ext keys and values */
  memset(cmd, 0, sizeof *cmd);
}

static char *dup_n(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* The arena holds every ext key and value of a command, NUL-terminated:
 * one allocation per command instead of two per field (they were 15 % of
 * the broker's CPU under RocketMQ-protocol sends). Its size is fixed before
 * the fields are read (from the header's length), so the pointers into it
 * stay valid. */
static int arena_init(fy_rmq_cmd *c, size_t cap) {
  if (cap == 0)
    return 0;
  if (!(c->arena = malloc(cap)))
    return -ENOMEM;
  c->arena_cap = cap;
  return 0;
}

static char *arena_put(fy_rmq_cmd *c, const char *s, size_t n) {
  if (n >= c->arena_cap - c->arena_len)
    return NULL;
  char *d = c->arena + c->arena_len;
  memcpy(d, s, n);
  d[n] = '\0';
  c->arena_len += n + 1;
  return d;
}

/* Adds or replaces (last one wins, as in RocketMQ's HashMap) an ext field.
 * Embedded NULs are refused: the strings are handed on as C strings. */
static int ext_put(fy_rmq_cmd *c, const char *k, size_t klen, const char *v, size_t vlen) {
  if (memchr(k, '\0', klen) || memchr(v, '\0', vlen))
    return -FY_EDECODE;
  for (size_t i = 0; i < c->next; i++) {
    /* first bytes first: SEND_MESSAGE_V2's keys are single letters */
    if (klen > 0 && c->ext[i].key[0] != k[0])
      continue;
    if (strlen(c->ext[i].key) == klen && memcmp(c->ext[i].key, k, klen) == 0) {
      char *val = arena_put(c, v, vlen); /* the old value stays, unused */
      if (!val)
        return -FY_EDECODE;
      c->ext[i].val = val;
      return 0;
    }
  }
  if (c->next == FY_RMQ_EXT_MAX)
    return -FY_EDECODE;
  char *key = arena_put(c, k, klen);
  char *val = key ? arena_put(c, v, vlen) : NULL;
  if (!val)
    return -FY_EDECODE; /* more than the header's length allowed for */
  c->ext[c->next].key = key;
  c->ext[c->next].val = val;
  c->next++;
  return 0;
}

/* A whole decimal integer in [min, max]: optional sign, digits, nothing else. */
static int parse_int(const char *s, int64_t min, int64_t max, int64_t *out) {
  if (!s || !(*s == '-' || *s == '+' || (*s >= '0' && *s <= '9')))
    return -EINVAL;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < min || v > max)
    return -EINVAL;
  if (!(end[-1] >= '0' && end[-1] <= '9')) /* a lone sign */
    return -EINVAL;
  *out = v;
  return 0;
}

/* An int32 header field: a JSON integer or a decimal string; absent/null keeps 0. */
static int json_i32(json_t *root, const char *key, bool required, int32_t *out) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v))
    return required ? -FY_EDECODE : 0;
  int64_t i;
  if (json_is_integer(v)) {
    i = json_integer_value(v);
    if (i < INT32_MIN || i > INT32_MAX)
      return -FY_EDECODE;
  } else if (json_is_string(v)) {
    if (parse_int(json_string_value(v), INT32_MIN, INT32_MAX, &i))
      return -FY_EDECODE;
  } else {
    return -FY_EDECODE;
  }
  *out = (int32_t)i;
  return 0;
}

/* An ext value as text: strings as they are, numbers in decimal (integral
 * reals without decimals), booleans "true"/"false". Null = absent (1). */
static int json_ext_text(json_t *v, char *tmp, size_t tmpsize, const char **s, size_t *n) {
  switch (json_typeof(v)) {
  case JSON_STRING:
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 0;
  case JSON_INTEGER:
    *n = (size_t)snprintf(tmp, tmpsize, "%" PRId64, (int64_t)json_integer_value(v));
    *s = tmp;
    return 0;
  case JSON_REAL: {
    double d = json_real_value(v);
    if (d > -9.2e18 && d < 9.2e18 && (double)(long long)d == d)
      *n = (size_t)snprintf(tmp, tmpsize, "%lld", (long long)d);
    else
      *n = (size_t)snprintf(tmp, tmpsize, "%.17g", d);
    *s = tmp;
    return 0;
  }
  case JSON_TRUE:
  case JSON_FALSE:
    *s = json_is_true(v) ? "true" : "false";
    *n = strlen(*s);
    return 0;
  case JSON_NULL:
    return 1;
  default:
    return -FY_EDECODE;
  }
}

static int parse_json(const uint8_t *h, size_t hlen, fy_rmq_cmd *c) {
  json_error_t je;
  json_t *root = json_loadb((const char *)h, hlen, 0, &je);
  if (!root)
    return -FY_EDECODE;
  int err = -FY_EDECODE;
  if (!json_is_object(root))
    goto out;
  if ((err = json_i32(root, "code", true, &c->code)) ||
      (err = json_i32(root, "version", false, &c->version)) ||
      (err = json_i32(root, "opaque", false, &c->opaque)) ||
      (err = json_i32(root, "flag", false, &c->flag)))
    goto out;
  err = -FY_EDECODE;
  json_t *v = json_object_get(root, "language");
  if (v && !json_is_null(v)) {
    if (!json_is_string(v))
      goto out;
    snprintf(c->language, sizeof c->language, "%s", json_string_value(v));
  }
  v = json_object_get(root, "remark");
  if (v && !json_is_null(v)) {
    if (!json_is_string(v))
      goto out;
    if (!(c->remark = dup_n(json_string_value(v), json_string_length(v)))) {
      err = -ENOMEM;
      goto out;
    }
  }
  v = json_object_get(root, "extFields");
  if (v && !json_is_null(v)) {
    if (!json_is_object(v) || json_object_size(v) > FY_RMQ_EXT_MAX)
      goto out;
    /* Keys and string values are no longer than in the header; a number's
     * text is under 32 bytes; two NULs per field. */
    if ((err = arena_init(c, hlen + json_object_size(v) * (32 + 2))) != 0)
      goto out;
    err = -FY_EDECODE;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
      char tmp[32];
      const char *s;
      size_t n;
      int r = json_ext_text(val, tmp, sizeof tmp, &s, &n);
      if (r < 0 || (r == 0 && (r = ext_put(c, key, strlen(key), s, n)) != 0)) {
        err = r;
        goto out;
      }
    }
  }
  err = 0;
out:
  json_decref(root);
  return err;
}

static int parse_bin(const uint8_t *h, size_t hlen, fy_rmq_cmd *c) {
  if (hlen < BIN_FIXED_LEN)
    return -FY_EDECODE;
  c->code = (int16_t)rd16(h);
  snprintf(c->language, sizeof c->language, "%s",
           h[2] < NLANGUAGES ? languages[h[2]] : "OTHER");
  c->version = (int16_t)rd16(h + 3);
  c->opaque = (int32_t)rd32(h + 5);
  c->flag = (int32_t)rd32(h + 9);
  size_t off = 13;
  int32_t rlen = (int32_t)rd32(h + off);
  off += 4;
  /* Room for the remark and the ext length that follows it. */
  if (rlen < 0 || (size_t)rlen > hlen - off - 4)
    return -FY_EDECODE;
  if (rlen > 0) {
    if (memchr(h + off, '\0', (size_t)rlen))
      return -FY_EDECODE;
    if (!(c->remark = dup_n((const char *)h + off, (size_t)rlen)))
      return -ENOMEM;
    off += (size_t)rlen;
  }
  int32_t elen = (int32_t)rd32(h + off);
  off += 4;
  if (elen < 0 || (size_t)elen > hlen - off)
    return -FY_EDECODE;
  /* Each entry has 6 bytes of lengths, room for its two NULs. */
  int aerr = arena_init(c, (size_t)elen);
  if (aerr)
    return aerr;
  /* Each entry: i16 key length, key, i32 value length, value; every pass
   * consumes at least 6 bytes of the ext region, so the loop is bounded. */
  size_t end = off + (size_t)elen;
  while (off < end) {
    if (end - off < 2)
      return -FY_EDECODE;
    int16_t klen = (int16_t)rd16(h + off);
    off += 2;
    if (klen < 0 || (size_t)klen > end - off || end - off - (size_t)klen < 4)
      return -FY_EDECODE;
    const char *k = (const char *)h + off;
    off += (size_t)klen;
    int32_t vlen = (int32_t)rd32(h + off);
    off += 4;
    if (vlen < 0 || (size_t)vlen > end - off)
      return -FY_EDECODE;
    int err = ext_put(c, k, (size_t)klen, (const char *)h + off, (size_t)vlen);
    if (err)
      return err;
    off += (size_t)vlen;
  }
  return 0; /* bytes after the ext region are ignored, as RocketMQ does */
}

ssize_t fy_rmq_parse(const uint8_t *buf, size_t len, uint32_t frame_max, fy_rmq_cmd *cmd) {
  memset(cmd, 0, sizeof *cmd);
  if (len < 4)
    return 0;
  uint32_t total = rd32(buf);
  if (total > frame_max)
    return -FY_EFRAME_TOO_BIG;
  if (total < 4)
    return -FY_EFRAME_HEADER;
  if (len < FY_RMQ_PREFIX_LEN)
    return 0;
  uint32_t word = rd32(buf + 4);
  uint8_t type = (uint8_t)(word >> FRAME_TYPE_SHIFT);
  uint32_t hlen = word & FRAME_HLEN_MASK;
  if (type != FY_RMQ_JSON && type != FY_RMQ_ROCKETMQ)
    return -FY_EFRAME_HEADER;
  if (hlen > FY_RMQ_HEADER_MAX)
    return -FY_EFRAME_TOO_BIG;
  if (hlen > total - 4)
    return -FY_EFRAME_HEADER;
  size_t frame_len = 4 + (size_t)total;
  if (len < frame_len)
    return 0;
  const uint8_t *h = buf + FY_RMQ_PREFIX_LEN;
  int err = type == FY_RMQ_JSON ? parse_json(h, hlen, cmd) : parse_bin(h, hlen, cmd);
  if (err) {
    fy_rmq_cmd_free(cmd);
    return err;
  }
  cmd->serialize = type;
  cmd->body = h + hlen;
  cmd->body_len = total - 4 - hlen;
  return (ssize_t)frame_len;
}

const char *fy_rmq_ext(const fy_rmq_cmd *cmd, const char *key) {
  for (size_t i = 0; i < cmd->next; i++)
    if (cmd->ext[i].key[0] == key[0] && strcmp(cmd->ext[i].key, key) == 0)
      return cmd->ext[i].val;
  return NULL;
}

int fy_rmq_ext_i64(const fy_rmq_cmd *cmd, const char *key, int64_t *out) {
  const char *v = fy_rmq_ext(cmd, key);
  if (!v)
    return -ENOENT;
  return parse_int(v, INT64_MIN, INT64_MAX, out);
}

int fy_rmq_ext_bool(const fy_rmq_cmd *cmd, const char *key, bool *out) {
  const char *v = fy_rmq_ext(cmd, key);
  if (!v)
    return -ENOENT;
  if (strcasecmp(v, "true") == 0)
    *out = true;
  else if (strcasecmp(v, "false") == 0)
    *out = false;
  else
    return -EINVAL;
  return 0;
}

/* ---- building and encoding --------------------------------------------- */

static void out_init(fy_rmq_out *o, int32_t code, int32_t opaque, int32_t flag, uint8_t ser) {
  o->code = code;
  o->opaque = opaque;
  o->flag = flag;
  o->version = FY_RMQ_VERSION;
  o->serialize = ser;
  o->remark[0] = '\0';
  o->has_remark = false;
  o->next = 0;
}

void fy_rmq_out_response(fy_rmq_out *o, const fy_rmq_cmd *req, int32_t code,
                         const char *remark_fmt, ...) {
  out_init(o, code, req->opaque, FY_RMQ_FLAG_RESPONSE, req->serialize);
  if (!remark_fmt)
    return;
  va_list ap;
  va_start(ap, remark_fmt);
  int n = vsnprintf(o->remark, sizeof o->remark, remark_fmt, ap);
  va_end(ap);
  if (n < 0) {
    o->remark[0] = '\0';
  } else if ((size_t)n >= sizeof o->remark) {
    /* Drop a character the limit split: find the last lead byte and cut
     * there when its sequence needs more bytes than were kept. */
    uint8_t *r = (uint8_t *)o->remark;
    size_t i = sizeof o->remark - 1, cont = 0;
    while (i > 0 && cont < 3 && (r[i - 1] & 0xC0) == 0x80) {
      i--;
      cont++;
    }
    if (i > 0) {
      uint8_t b = r[i - 1];
      size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
      if (need > cont + 1)
        r[i - 1] = '\0';
    }
  }
  o->has_remark = true;
}

void fy_rmq_out_request(fy_rmq_out *o, int32_t code, int32_t opaque, uint8_t serialize,
                        bool oneway) {
  out_init(o, code, opaque, oneway ? FY_RMQ_FLAG_ONEWAY : 0, serialize);
}

int fy_rmq_out_str(fy_rmq_out *o, const char *key, const char *val) {
  size_t klen = key ? strlen(key) : 0;
  if (klen == 0 || klen >= sizeof o->ext[0].key || !val)
    return -EINVAL;
  size_t i = 0;
  while (i < o->next && strcmp(o->ext[i].key, key) != 0)
    i++;
  if (i == FY_RMQ_EXT_MAX)
    return -ENOSPC;
  char *v = strdup(val);
  if (!v)
    return -ENOMEM;
  if (i < o->next) {
    free(o->ext[i].val);
  } else {
    memcpy(o->ext[i].key, key, klen + 1);
    o->next++;
  }
  o->ext[i].val = v;
  return 0;
}

int fy_rmq_out_i64(fy_rmq_out *o, const char *key, int64_t v) {
  char tmp[24];
  snprintf(tmp, sizeof tmp, "%" PRId64, v);
  return fy_rmq_out_str(o, key, tmp);
}

void fy_rmq_out_free(fy_rmq_out *o) {
  for (size_t i = 0; i < o->next && i < FY_RMQ_EXT_MAX; i++) {
    free(o->ext[i].val);
    o->ext[i].val = NULL;
  }
  o->next = 0;
}

/* Length of the valid UTF-8 sequence at s (of n bytes), 0 if invalid
 * (overlong forms, surrogates and code points above U+10FFFF included). */
static size_t utf8_seq(const uint8_t *s, size_t n) {
  uint8_t b = s[0];
  size_t len;
  uint32_t cp;
  if (b < 0x80)
    return 1;
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
    cp = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    cp = b & 0x0F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    cp = b & 0x07;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return len;
}

/* A JSON string of s; bytes that are not UTF-8 become '?' (jansson only
 * takes valid UTF-8, and a reply must not fail over a client's bytes). */
static json_t *json_text(const char *s) {
  size_t n = strlen(s), i = 0, k;
  while (i < n && (k = utf8_seq((const uint8_t *)s + i, n - i)) != 0)
    i += k;
  if (i == n)
    return json_stringn_nocheck(s, n);
  char *copy = dup_n(s, n);
  if (!copy)
    return NULL;
  for (i = 0; i < n; i += k) {
    k = utf8_seq((const uint8_t *)copy + i, n - i);
    if (k == 0) {
      copy[i] = '?';
      k = 1;
    }
  }
  json_t *j = json_stringn_nocheck(copy, n);
  free(copy);
  return j;
}

static int set_new(json_t *obj, const char *key, json_t *v) {
  return v ? json_object_set_new_nocheck(obj, key, v) : -1;
}

/* The JSON header text (malloc'd, not NUL-terminated in *len), keys in
 * RocketMQ's (fastjson's alphabetical) order. */
static int encode_json(const fy_rmq_out *o, char **text, size_t *len) {
  json_t *root = json_object(), *ext = json_object();
  int err = -ENOMEM;
  if (!root || !ext)
    goto out;
  for (size_t i = 0; i < o->next; i++) {
    json_t *k = json_text(o->ext[i].key);
    int r = k ? set_new(ext, json_string_value(k), json_text(o->ext[i].val)) : -1;
    json_decref(k);
    if (r)
      goto out;
  }
  /* extFields is borrowed (json_object_set): root and ext are both released below. */
  if (set_new(root, "code", json_integer(o->code)) ||
      json_object_set_nocheck(root, "extFields", ext) ||
      set_new(root, "flag", json_integer(o->flag)) ||
      set_new(root, "language", json_string("JAVA")) ||
      set_new(root, "opaque", json_integer(o->opaque)) ||
      (o->has_remark && set_new(root, "remark", json_text(o->remark))) ||
      set_new(root, "serializeTypeCurrentRPC", json_string("JSON")) ||
      set_new(root, "version", json_integer(o->version)))
    goto out;
  *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (*text) {
    *len = strlen(*text);
    err = 0;
  }
out:
  json_decref(ext);
  json_decref(root);
  return err;
}

/* RocketMQ's binary header: code i16, language u8 (0 = JAVA), version i16,
 * opaque i32, flag i32, remark (i32 length + bytes), ext (i32 length, then
 * per field i16 key length + key, i32 value length + value). */
static int encode_bin(const fy_rmq_out *o, char **text, size_t *len) {
  size_t rlen = o->has_remark ? strlen(o->remark) : 0;
  size_t elen = 0;
  for (size_t i = 0; i < o->next; i++)
    elen += 2 + strlen(o->ext[i].key) + 4 + strlen(o->ext[i].val);
  size_t n = BIN_FIXED_LEN + rlen + elen;
  if (n > FRAME_HLEN_MASK)
    return -EMSGSIZE;
  uint8_t *b = malloc(n), *p = b;
  if (!b)
    return -ENOMEM;
  p = wr16(p, (uint16_t)o->code);
  *p++ = 0;
  p = wr16(p, (uint16_t)o->version);
  p = wr32(p, (uint32_t)o->opaque);
  p = wr32(p, (uint32_t)o->flag);
  p = wr32(p, (uint32_t)rlen);
  memcpy(p, o->remark, rlen);
  p += rlen;
  p = wr32(p, (uint32_t)elen);
  for (size_t i = 0; i < o->next; i++) {
    size_t kl = strlen(o->ext[i].key), vl = strlen(o->ext[i].val);
    p = wr16(p, (uint16_t)kl);
    memcpy(p, o->ext[i].key, kl);
    p = wr32(p + kl, (uint32_t)vl);
    memcpy(p, o->ext[i].val, vl);
    p += vl;
  }
  *text = (char *)b;
  *len = n;
  return 0;
}

int fy_rmq_out_encode(const fy_rmq_out *o, uint32_t body_len, uint8_t **out, size_t *out_len) {
  char *h = NULL;
  size_t hlen = 0;
  int err = o->serialize == FY_RMQ_ROCKETMQ ? encode_bin(o, &h, &hlen) : encode_json(o, &h, &hlen);
  if (err)
    return err;
  if (hlen > FRAME_HLEN_MASK || 4 + (uint64_t)hlen + body_len > UINT32_MAX) {
    free(h);
    return -EMSGSIZE;
  }
  uint8_t *b = malloc(FY_RMQ_PREFIX_LEN + hlen);
  if (!b) {
    free(h);
    return -ENOMEM;
  }
  uint8_t type = o->serialize == FY_RMQ_ROCKETMQ ? FY_RMQ_ROCKETMQ : FY_RMQ_JSON;
  wr32(b, (uint32_t)(4 + hlen + body_len));
  wr32(b + 4, (uint32_t)type << FRAME_TYPE_SHIFT | (uint32_t)hlen);
  memcpy(b + FY_RMQ_PREFIX_LEN, h, hlen);
  free(h);
  *out = b;
  *out_len = FY_RMQ_PREFIX_LEN + hlen;
  return 0;
}

/* ---- protocol tables ---------------------------------------------------- */

#define V2F(name, v2) {name, sizeof name - 1, v2}
static const struct {
  const char *name;
  size_t len;
  const char *v2;
} send_v2_fields[] = {
    V2F("producerGroup", "a"),  V2F("topic", "b"),    V2F("defaultTopic", "c"),
    V2F("defaultTopicQueueNums", "d"), V2F("queueId", "e"), V2F("sysFlag", "f"),
    V2F("bornTimestamp", "g"),  V2F("flag", "h"),     V2F("properties", "i"),
    V2F("reconsumeTimes", "j"), V2F("unitMode", "k"), V2F("maxReconsumeTimes", "l"),
    V2F("batch", "m"),
};
#undef V2F

/* Called for each field of every RocketMQ send: a scan with strcmp was 5 %
 * of the broker's CPU under binary-header sends. The names differ in their
 * length or first byte, so at most one memcmp runs. */
const char *fy_rmq_send_v2_field(const char *long_name) {
  size_t len = strlen(long_name);
  for (size_t i = 0; i < sizeof send_v2_fields / sizeof send_v2_fields[0]; i++)
    if (send_v2_fields[i].len == len && send_v2_fields[i].name[0] == long_name[0] &&
        memcmp(send_v2_fields[i].name, long_name, len) == 0)
      return send_v2_fields[i].v2;
  return NULL;
}

const char *fy_rmq_req_name(int32_t code) {
  switch (code) {
#define FY__RMQ_NAME(name, num) case num: return #name;
    FY_RMQ_REQ_TABLE(FY__RMQ_NAME)
  }
  return NULL;
}

const char *fy_rmq_resp_name(int32_t code) {
  switch (code) {
    FY_RMQ_RESP_TABLE(FY__RMQ_NAME)
#undef FY__RMQ_NAME
  }
  return NULL;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Trims [*s, *e) of spaces. */
static void trim(char **s, char **e) {
  while (*s < *e && is_space(**s))
    (*s)++;
  while (*e > *s && is_space((*e)[-1]))
    (*e)--;
}

int fy_rmq_tags_parse(const char *expr, char *buf, size_t bufsize, const char **tags, size_t max) {
  if (!expr)
    return 0;
  size_t n = strlen(expr);
  if (n >= bufsize)
    return -ENOSPC;
  memcpy(buf, expr, n + 1);
  char *s = buf, *e = buf + n;
  trim(&s, &e);
  if (s == e || (e - s == 1 && *s == '*'))
    return 0;
  size_t count = 0;
  /* Each pass consumes one alternative and its "||": bounded by n. */
  for (char *alt = buf;;) {
    char *sep = strstr(alt, "||");
    char *a = alt, *z = sep ? sep : buf + n;
    trim(&a, &z);
    *z = '\0';
    if (z - a == 1 && *a == '*')
      return 0;
    bool dup = a == z; /* an empty alternative is skipped, as RocketMQ's FilterAPI does */
    for (size_t i = 0; i < count && !dup; i++)
      dup = strcmp(tags[i], a) == 0;
    if (!dup) {
      if (count == max)
        return -E2BIG;
      tags[count++] = a;
    }
    if (!sep)
      break;
    alt = sep + 2;
  }
  /* Only separators ("||", " || "): RocketMQ refuses the first ("subString
   * split error") and matches nothing with the second; both are refused. */
  return count ? (int)count : -EINVAL;
}
