/*
 * libFuzzer target for the RocketMQ remoting codec, what an unchanged
 * RocketMQ client (or anyone on the port) controls first: fy_rmq_parse on
 * frames back to back, and fy_rmq_batch_next over each frame's body (the
 * SEND_BATCH_MESSAGE layout). Built only with -DFERRY_FUZZ=ON under clang
 * (scripts/fuzz.sh).
 *
 * Each frame is checked against the parser's contract (sizes add up, strict
 * prefixes ask for more, errors are the documented ones and leave nothing
 * allocated); a parsed command is re-encoded in its own serialization and
 * must parse back to the same code, opaque, flag and ext fields.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "remoting/remoting.h"

#define FRAME_MAX (1u << 20)
#define FRAMES_MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_batch(const uint8_t *body, uint32_t body_len) {
  const uint8_t *p = body;
  size_t len = body_len;
  /* Every entry is at least 22 bytes, so this bound is never the one that stops. */
  for (size_t i = 0; i <= body_len / 22; i++) {
    fy_rmq_batch_msg m;
    const uint8_t *before = p;
    size_t before_len = len;
    int r = fy_rmq_batch_next(&p, &len, &m);
    if (r <= 0) {
      fy_assert(r == 0 || r == -FY_EDECODE);
      fy_assert(p == before && len == before_len);
      fy_assert(r != 0 || len == 0);
      return;
    }
    fy_assert(r == 1);
    fy_assert(p > before && (size_t)(p - before) == before_len - len);
    fy_assert(m.body >= before && m.body + m.body_len <= p);
    fy_assert((const uint8_t *)m.props >= m.body + m.body_len);
    fy_assert((const uint8_t *)m.props + m.props_len == p);
  }
  fy_assert(!"batch iterator did not stop");
}

static void check_msgs(const uint8_t *p, size_t len) {
  /* Every message is at least 91 bytes: the bound never stops a valid walk. */
  for (size_t i = 0; i <= len / 91; i++) {
    struct fy_msg m;
    int64_t n = fy_rmq_msg_decode(p, len, &m);
    if (n <= 0) {
      fy_assert(n == -EAGAIN || n == -FY_EDECODE);
      return;
    }
    fy_assert((size_t)n <= len && m.total_size == n);
    /* The encoder picks the V2 layout (2-byte topic length) only for topics
     * over 127 bytes; when the input made the same choice and its SYSFLAG
     * host bits decided the layout, the bytes come back as they were. */
    bool v2_in = p[7] == (FY_RMQ_MSG_MAGIC_V2 & 0xFF);
    if (v2_in == (m.topic_len > 127)) {
      fy_assert(fy_rmq_msg_size(&m) == n);
      uint8_t *again = malloc((size_t)n);
      fy_assert(fy_rmq_msg_encode(&m, again) == n);
      fy_assert(memcmp(again, p, (size_t)n) == 0);
      free(again);
    }
    p += n;
    len -= (size_t)n;
  }
}

/* Re-encodes c in its own serialization and parses it back. */
static void check_round_trip(const fy_rmq_cmd *c) {
  fy_rmq_out o;
  fy_rmq_out_request(&o, c->code, c->opaque, c->serialize, false);
  o.flag = c->flag;
  o.version = c->version;
  bool keys_fit = true;
  for (size_t i = 0; i < c->next; i++) {
    int r = fy_rmq_out_str(&o, c->ext[i].key, c->ext[i].val);
    if (r == -EINVAL) /* empty key or one over 63 bytes */
      keys_fit = false;
    else
      fy_assert(r == 0);
  }
  uint8_t *buf;
  size_t len;
  fy_assert(fy_rmq_out_encode(&o, 0, &buf, &len) == 0);
  /* Text the encoder spells longer (a JSON real as a string) can push a
   * header that was just under the limit over it; nothing to compare then. */
  if (len - FY_RMQ_PREFIX_LEN > FY_RMQ_HEADER_MAX) {
    free(buf);
    fy_rmq_out_free(&o);
    return;
  }
  fy_rmq_cmd d;
  ssize_t n = fy_rmq_parse(buf, len, UINT32_MAX, &d);
  fy_assert(n == (ssize_t)len);
  fy_assert(d.serialize == c->serialize);
  fy_assert(d.code == c->code);
  fy_assert(d.version == c->version);
  fy_assert(d.opaque == c->opaque);
  fy_assert(d.flag == c->flag);
  if (keys_fit) {
    fy_assert(d.next == c->next);
    for (size_t i = 0; i < c->next; i++) {
      const char *v = fy_rmq_ext(&d, c->ext[i].key);
      fy_assert(v != NULL);
      /* JSON replaces bytes that are not UTF-8; JSON input never has them. */
      fy_assert(strcmp(v, c->ext[i].val) == 0);
    }
  }
  fy_rmq_cmd_free(&d);
  free(buf);
  fy_rmq_out_free(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t off = 0;
  for (int i = 0; i < FRAMES_MAX && off < size; i++) {
    const uint8_t *p = data + off;
    size_t avail = size - off;
    fy_rmq_cmd c;
    ssize_t n = fy_rmq_parse(p, avail, FRAME_MAX, &c);
    if (n <= 0) {
      fy_assert(n == 0 || n == -FY_EFRAME_TOO_BIG || n == -FY_EFRAME_HEADER ||
                n == -FY_EDECODE);
      fy_assert(c.next == 0 && c.remark == NULL);
      fy_rmq_cmd_free(&c);
      break;
    }
    fy_assert((size_t)n <= avail);
    fy_assert((size_t)n >= FY_RMQ_PREFIX_LEN);
    fy_assert(c.serialize == FY_RMQ_JSON || c.serialize == FY_RMQ_ROCKETMQ);
    fy_assert(c.body >= p + FY_RMQ_PREFIX_LEN && c.body + c.body_len == p + n);
    fy_assert(c.next <= FY_RMQ_EXT_MAX);
    fy_assert(strlen(c.language) < sizeof c.language);
    for (size_t k = 0; k < c.next; k++)
      fy_assert(fy_rmq_ext(&c, c.ext[k].key) == c.ext[k].val); /* keys are unique */
    /* Strict prefixes ask for more (a few, to stay fast). */
    size_t cuts[] = {0, 3, 4, 7, 8, (size_t)n - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
      if (cuts[k] >= (size_t)n)
        continue;
      fy_rmq_cmd e;
      fy_assert(fy_rmq_parse(p, cuts[k], FRAME_MAX, &e) == 0);
    }
    check_round_trip(&c);
    check_batch(c.body, c.body_len);
    fy_rmq_cmd_free(&c);
    off += (size_t)n;
  }
  /* The whole input as a batch body, as stored messages (which re-encode to
   * the same bytes) and, NUL-terminated, as a tag expression. */
  check_batch(data, (uint32_t)(size > FRAME_MAX ? FRAME_MAX : size));
  check_msgs(data, size);
  if (size < 512) {
    char expr[512], buf[512];
    memcpy(expr, data, size);
    expr[size] = '\0';
    const char *tags[8];
    int r = fy_rmq_tags_parse(expr, buf, sizeof buf, tags, 8);
    fy_assert(r == -E2BIG || r == -EINVAL || (r >= 0 && r <= 8));
    /* Tags are non-empty (empty alternatives are skipped), trimmed, and
     * never span a separator. */
    for (int k = 0; k < r; k++) {
      size_t tl = strlen(tags[k]);
      fy_assert(tags[k] >= buf && tags[k] + tl < buf + sizeof buf && tl > 0);
      fy_assert(tags[k][0] != ' ' && tags[k][tl - 1] != ' ' && !strstr(tags[k], "||"));
    }
  }
  return 0;
}
