/*
 * RocketMQ's message layouts: the 4.x stored-message layout Ferry writes
 * into PULL_MESSAGE and query bodies (from a decoded Ferry record, field by
 * field: the record keeps the same order in little-endian), the batch send
 * body a producer packs its messages into, and the offsetMsgId. Also the
 * zlib CRC32 RocketMQ puts in BODYCRC (Ferry's records carry a CRC32C over
 * the whole record instead, so the body CRC is computed here).
 */
#include "remoting/remoting.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

#define TOPIC_V1_MAX 127u  /* Java reads TOPICLEN as a signed byte */
#define BATCH_FIXED_LEN 22u /* TOTALSIZE, MAGIC, BODYCRC, FLAG, BODYLEN (4 each), PROPLEN (2) */
#define CRC32_POLY 0xEDB88320u /* reflected IEEE 802.3, as zlib */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_build(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; bit++)
      c = (c & 1u) ? (c >> 1) ^ CRC32_POLY : c >> 1;
    crc_table[0][i] = c;
  }
  for (int t = 1; t < 8; t++)
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t prev = crc_table[t - 1][i];
      crc_table[t][i] = crc_table[0][prev & 0xFF] ^ (prev >> 8);
    }
}

/* Slicing-by-8 over little-endian words (the host order: x86-64, arm64). */
uint32_t fy_rmq_crc32(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&crc_once, crc_build);
  const uint8_t *p = buf;
  uint32_t c = ~crc;
  for (; len >= 8; p += 8, len -= 8) {
    uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                       (uint32_t)p[3] << 24);
    uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                  (uint32_t)p[7] << 24;
    c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
        crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^
        crc_table[2][(hi >> 8) & 0xFF] ^ crc_table[1][(hi >> 16) & 0xFF] ^
        crc_table[0][hi >> 24];
  }
  for (; len > 0; p++, len--)
    c = crc_table[0][(c ^ *p) & 0xFF] ^ (c >> 8);
  return ~c;
}

static uint8_t *put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return p + 2;
}
static uint8_t *put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)(v >> 16));
  put16(p + 2, (uint16_t)v);
  return p + 4;
}
static uint8_t *put64(uint8_t *p, uint64_t v) {
  put32(p, (uint32_t)(v >> 32));
  put32(p + 4, (uint32_t)v);
  return p + 8;
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t host_len(const struct fy_host *h) { return h->v6 ? 20u : 8u; }

static uint8_t *put_host(uint8_t *p, const struct fy_host *h) {
  size_t n = h->v6 ? 16 : 4;
  memcpy(p, h->ip, n);
  return put32(p + n, h->port);
}

uint32_t fy_rmq_msg_size(const struct fy_msg *m) {
  uint64_t n = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 /* through BORNTIMESTAMP */
               + host_len(&m->born_host) + 8 + host_len(&m->store_host) + 4 + 8 /* to PREPARED_TX */
               + 4 + (uint64_t)m->body_len + (m->topic_len > TOPIC_V1_MAX ? 2 : 1) + m->topic_len +
               2 + m->props_len;
  return n > INT32_MAX ? 0 : (uint32_t)n; /* TOTALSIZE is a Java int */
}

uint32_t fy_rmq_msg_encode(const struct fy_msg *m, uint8_t *out) {
  uint32_t size = fy_rmq_msg_size(m);
  bool v2 = m->topic_len > TOPIC_V1_MAX;
  uint32_t sys_flag = m->sys_flag & ~(FY_SYSFLAG_BORNHOST_V6 | FY_SYSFLAG_STOREHOST_V6);
  if (m->born_host.v6)
    sys_flag |= FY_SYSFLAG_BORNHOST_V6;
  if (m->store_host.v6)
    sys_flag |= FY_SYSFLAG_STOREHOST_V6;
  uint8_t *p = out;
  p = put32(p, size);
  p = put32(p, v2 ? FY_RMQ_MSG_MAGIC_V2 : FY_RMQ_MSG_MAGIC_V1);
  p = put32(p, fy_rmq_crc32(0, m->body, m->body_len) & 0x7FFFFFFFu);
  p = put32(p, m->queue_id);
  p = put32(p, m->flag);
  p = put64(p, m->queue_offset);
  p = put64(p, m->phys_offset);
  p = put32(p, sys_flag);
  p = put64(p, (uint64_t)m->born_ts_ms);
  p = put_host(p, &m->born_host);
  p = put64(p, (uint64_t)m->store_ts_ms);
  p = put_host(p, &m->store_host);
  p = put32(p, m->reconsume_times);
  p = put64(p, m->prepared_tx_offset);
  p = put32(p, m->body_len);
  if (m->body_len)
    memcpy(p, m->body, m->body_len);
  p += m->body_len;
  if (v2)
    p = put16(p, m->topic_len);
  else
    *p++ = (uint8_t)m->topic_len;
  if (m->topic_len)
    memcpy(p, m->topic, m->topic_len);
  p += m->topic_len;
  p = put16(p, m->props_len);
  if (m->props_len)
    memcpy(p, m->props, m->props_len);
  p += m->props_len;
  fy_assert((size_t)(p - out) == size);
  return size;
}

static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

/* Reads a host (IPv4 or IPv6 + port) at *off. */
static void get_host(const uint8_t *p, size_t *off, bool v6, struct fy_host *h) {
  size_t n = v6 ? 16 : 4;
  memset(h->ip, 0, sizeof h->ip);
  memcpy(h->ip, p + *off, n);
  h->port = get32(p + *off + n);
  h->v6 = v6;
  *off += n + 4;
}

int64_t fy_rmq_msg_decode(const uint8_t *p, size_t avail, struct fy_msg *out) {
  if (avail < 8)
    return -EAGAIN;
  uint32_t size = get32(p), magic = get32(p + 4);
  if (magic != FY_RMQ_MSG_MAGIC_V1 && magic != FY_RMQ_MSG_MAGIC_V2)
    return -FY_EDECODE;
  if (size < 91 || size > INT32_MAX) /* the smallest message: IPv4 hosts, nothing else */
    return -FY_EDECODE;
  if (avail < size)
    return -EAGAIN;
  struct fy_msg m = {0};
  m.total_size = size;
  uint32_t crc = get32(p + 8);
  m.queue_id = get32(p + 12);
  m.flag = get32(p + 16);
  m.queue_offset = get64(p + 20);
  m.phys_offset = get64(p + 28);
  m.sys_flag = get32(p + 36);
  m.born_ts_ms = (int64_t)get64(p + 40);
  size_t off = 48;
  bool born_v6 = m.sys_flag & FY_SYSFLAG_BORNHOST_V6, store_v6 = m.sys_flag & FY_SYSFLAG_STOREHOST_V6;
  /* Fixed part: through BODYLEN, plus the topic and props length fields. */
  size_t fixed = off + (born_v6 ? 20 : 8) + 8 + (store_v6 ? 20 : 8) + 4 + 8 + 4;
  size_t tl_len = magic == FY_RMQ_MSG_MAGIC_V2 ? 2 : 1;
  if (size < fixed + tl_len + 2)
    return -FY_EDECODE;
  get_host(p, &off, born_v6, &m.born_host);
  m.store_ts_ms = (int64_t)get64(p + off);
  off += 8;
  get_host(p, &off, store_v6, &m.store_host);
  m.reconsume_times = get32(p + off);
  m.prepared_tx_offset = get64(p + off + 4);
  m.body_len = get32(p + off + 12);
  off += 16;
  if (m.body_len > size - fixed - tl_len - 2)
    return -FY_EDECODE;
  m.body = p + off;
  off += m.body_len;
  m.topic_len = tl_len == 2 ? (uint16_t)(p[off] << 8 | p[off + 1]) : p[off];
  off += tl_len;
  if (m.topic_len > size - off - 2)
    return -FY_EDECODE;
  m.topic = (const char *)p + off;
  off += m.topic_len;
  m.props_len = (uint16_t)(p[off] << 8 | p[off + 1]);
  off += 2;
  if (off + m.props_len != size)
    return -FY_EDECODE;
  m.props = (const char *)p + off;
  if ((fy_rmq_crc32(0, m.body, m.body_len) & 0x7FFFFFFFu) != crc)
    return -FY_EDECODE;
  *out = m;
  return size;
}

void fy_rmq_offset_msg_id(const uint8_t ip4[4], uint32_t port, uint64_t phys, char out[33]) {
  uint8_t raw[16];
  memcpy(raw, ip4, 4);
  put64(put32(raw + 4, port), phys);
  for (int i = 0; i < 16; i++)
    snprintf(out + 2 * i, 3, "%02X", raw[i]);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

int fy_rmq_offset_msg_id_parse(const char *id, uint8_t ip4[4], uint32_t *port, uint64_t *phys) {
  if (!id || strlen(id) != 32)
    return -EINVAL;
  uint8_t raw[16];
  for (int i = 0; i < 16; i++) {
    int hi = hexval(id[2 * i]), lo = hexval(id[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -EINVAL;
    raw[i] = (uint8_t)(hi << 4 | lo);
  }
  memcpy(ip4, raw, 4);
  *port = get32(raw + 4);
  *phys = (uint64_t)get32(raw + 8) << 32 | get32(raw + 12);
  return 0;
}

int fy_rmq_batch_next(const uint8_t **p, size_t *len, fy_rmq_batch_msg *m) {
  const uint8_t *b = *p;
  size_t n = *len;
  if (n == 0)
    return 0;
  if (n < BATCH_FIXED_LEN)
    return -FY_EDECODE;
  uint32_t total = get32(b);
  if (total < BATCH_FIXED_LEN || total > n)
    return -FY_EDECODE;
  uint32_t body_len = get32(b + 16);
  if (body_len > total - BATCH_FIXED_LEN)
    return -FY_EDECODE;
  const uint8_t *q = b + 20 + body_len;
  uint16_t props_len = (uint16_t)(q[0] << 8 | q[1]);
  if ((uint64_t)BATCH_FIXED_LEN + body_len + props_len != total)
    return -FY_EDECODE;
  m->flag = (int32_t)get32(b + 12);
  m->body = b + 20;
  m->body_len = body_len;
  m->props = (const char *)q + 2;
  m->props_len = props_len;
  *p = b + total;
  *len = n - total;
  return 1;
}
