/*
 * Encoding and validation of commit-log records; the layout is drawn in
 * record.h. Validation is the one rule recovery, replication and reads all
 * share: a record that fails it is never served.
 */
#include "common/record.h"

#include <errno.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/log.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "record codec assumes a little-endian host");

#define OFF_TOTAL 0
#define OFF_MAGIC 4
#define OFF_CRC 8
#define OFF_QUEUE_ID 12
#define OFF_FLAG 16
#define OFF_QUEUE_OFFSET 20
#define OFF_PHYS_OFFSET 28
#define OFF_SYS_FLAG 36
#define OFF_BORN_TS 40
#define OFF_BORN_HOST 48

static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static inline uint32_t host_size(bool v6) { return v6 ? 20u : 8u; }

static uint32_t record_crc(const uint8_t *rec, uint32_t total) {
  uint32_t crc = fy_crc32c(0, rec, OFF_CRC);
  return fy_crc32c(crc, rec + OFF_CRC + 4, total - OFF_CRC - 4);
}

uint32_t fy_record_size(const struct fy_msg *m) {
  if (m->topic_len == 0 || m->topic_len > FY_TOPIC_MAX || m->props_len > FY_PROPS_MAX)
    return 0;
  uint64_t size = FY_RECORD_FIXED_V4 - 16 + host_size(m->born_host.v6) +
                  host_size(m->store_host.v6) + (uint64_t)m->body_len + m->topic_len +
                  m->props_len;
  if (size > INT32_MAX)
    return 0;
  return (uint32_t)size;
}

static uint8_t *put_host(uint8_t *p, const struct fy_host *h) {
  size_t n = h->v6 ? 16 : 4;
  memcpy(p, h->ip, n);
  put32(p + n, h->port);
  return p + n + 4;
}

uint32_t fy_record_encode(const struct fy_msg *m, uint8_t *dst) {
  uint32_t total = fy_record_size(m);
  uint32_t sys_flag = m->sys_flag & ~(FY_SYSFLAG_BORNHOST_V6 | FY_SYSFLAG_STOREHOST_V6);
  if (m->born_host.v6)
    sys_flag |= FY_SYSFLAG_BORNHOST_V6;
  if (m->store_host.v6)
    sys_flag |= FY_SYSFLAG_STOREHOST_V6;

  put32(dst + OFF_TOTAL, total);
  put32(dst + OFF_MAGIC, FY_RECORD_MAGIC);
  put32(dst + OFF_QUEUE_ID, m->queue_id);
  put32(dst + OFF_FLAG, m->flag);
  put64(dst + OFF_QUEUE_OFFSET, m->queue_offset);
  put64(dst + OFF_PHYS_OFFSET, m->phys_offset);
  put32(dst + OFF_SYS_FLAG, sys_flag);
  put64(dst + OFF_BORN_TS, (uint64_t)m->born_ts_ms);
  uint8_t *p = put_host(dst + OFF_BORN_HOST, &m->born_host);
  put64(p, (uint64_t)m->store_ts_ms);
  p = put_host(p + 8, &m->store_host);
  put32(p, m->reconsume_times);
  put64(p + 4, m->prepared_tx_offset);
  put32(p + 12, m->body_len);
  p += 16;
  if (m->body_len)
    memcpy(p, m->body, m->body_len);
  p += m->body_len;
  put16(p, m->topic_len);
  memcpy(p + 2, m->topic, m->topic_len);
  p += 2 + m->topic_len;
  put16(p, m->props_len);
  if (m->props_len)
    memcpy(p + 2, m->props, m->props_len);
  p += 2 + m->props_len;

  fy_assert((uint32_t)(p - dst) == total);
  put32(dst + OFF_CRC, record_crc(dst, total));
  return total;
}

static size_t store_ts_off(uint32_t sys_flag) {
  return OFF_BORN_HOST + host_size(sys_flag & FY_SYSFLAG_BORNHOST_V6);
}

void fy_record_restamp(uint8_t *rec, uint64_t queue_offset, uint64_t phys_offset,
                       int64_t store_ts_ms) {
  uint32_t total = get32(rec + OFF_TOTAL);
  put64(rec + OFF_QUEUE_OFFSET, queue_offset);
  put64(rec + OFF_PHYS_OFFSET, phys_offset);
  put64(rec + store_ts_off(get32(rec + OFF_SYS_FLAG)), (uint64_t)store_ts_ms);
  put32(rec + OFF_CRC, record_crc(rec, total));
}

void fy_record_encode_blank(uint8_t *dst, uint32_t remaining) {
  put32(dst, remaining);
  put32(dst + 4, FY_BLANK_MAGIC);
}

static const uint8_t *get_host(const uint8_t *p, struct fy_host *h, bool v6) {
  size_t n = v6 ? 16 : 4;
  memset(h->ip, 0, sizeof h->ip);
  memcpy(h->ip, p, n);
  h->port = get32(p + n);
  h->v6 = v6;
  return p + n + 4;
}

static int64_t decode(const uint8_t *p, size_t avail, uint64_t phys, enum fy_record_kind *kind,
                      struct fy_msg *out, bool check_crc) {
  if (avail < 8) {
    /* Too short to tell; all-zero means nothing was ever written here. */
    for (size_t i = 0; i < avail; i++)
      if (p[i])
        return -EAGAIN;
    return -FY_ECORRUPT;
  }
  uint32_t total = get32(p + OFF_TOTAL);
  uint32_t magic = get32(p + OFF_MAGIC);
  if (magic == FY_BLANK_MAGIC) {
    if (total < FY_BLANK_SIZE)
      return -FY_ECORRUPT;
    *kind = FY_REC_BLANK;
    return total;
  }
  if (magic != FY_RECORD_MAGIC || total < FY_RECORD_FIXED_V4 || total > INT32_MAX)
    return -FY_ECORRUPT;
  if (total > avail)
    return -EAGAIN;

  /* Walk the length fields; they must add up to total exactly. */
  uint32_t sys_flag = get32(p + OFF_SYS_FLAG);
  uint64_t need = FY_RECORD_FIXED_V4 - 16 + host_size(sys_flag & FY_SYSFLAG_BORNHOST_V6) +
                  host_size(sys_flag & FY_SYSFLAG_STOREHOST_V6);
  if (need > total)
    return -FY_ECORRUPT;
  const uint8_t *q = p + store_ts_off(sys_flag) + 8 + host_size(sys_flag & FY_SYSFLAG_STOREHOST_V6);
  uint32_t body_len = get32(q + 12);
  need += body_len;
  if (need > total)
    return -FY_ECORRUPT;
  const uint8_t *tq = q + 16 + body_len;
  uint16_t topic_len = get16(tq);
  need += topic_len;
  if (need > total || topic_len == 0)
    return -FY_ECORRUPT;
  const uint8_t *pq = tq + 2 + topic_len;
  uint16_t props_len = get16(pq);
  need += props_len;
  if (need != total)
    return -FY_ECORRUPT;
  if (check_crc && get32(p + OFF_CRC) != record_crc(p, total))
    return -FY_ECORRUPT;
  if (get64(p + OFF_PHYS_OFFSET) != phys)
    return -FY_ECORRUPT;

  *kind = FY_REC_MSG;
  if (out) {
    out->total_size = total;
    out->queue_id = get32(p + OFF_QUEUE_ID);
    out->flag = get32(p + OFF_FLAG);
    out->queue_offset = get64(p + OFF_QUEUE_OFFSET);
    out->phys_offset = phys;
    out->sys_flag = sys_flag;
    out->born_ts_ms = (int64_t)get64(p + OFF_BORN_TS);
    const uint8_t *s = get_host(p + OFF_BORN_HOST, &out->born_host,
                                sys_flag & FY_SYSFLAG_BORNHOST_V6);
    out->store_ts_ms = (int64_t)get64(s);
    s = get_host(s + 8, &out->store_host, sys_flag & FY_SYSFLAG_STOREHOST_V6);
    out->reconsume_times = get32(s);
    out->prepared_tx_offset = get64(s + 4);
    out->body_len = body_len;
    out->body = q + 16;
    out->topic_len = topic_len;
    out->topic = (const char *)tq + 2;
    out->props_len = props_len;
    out->props = (const char *)pq + 2;
  }
  return total;
}

int64_t fy_record_decode(const uint8_t *p, size_t avail, uint64_t phys, enum fy_record_kind *kind,
                         struct fy_msg *out) {
  return decode(p, avail, phys, kind, out, true);
}

int64_t fy_record_decode_own(const uint8_t *p, size_t avail, uint64_t phys,
                             enum fy_record_kind *kind, struct fy_msg *out) {
  return decode(p, avail, phys, kind, out, false);
}

bool fy_props_next(const char **pos, const char *end, const char **key, size_t *key_len,
                   const char **val, size_t *val_len) {
  const char *p = *pos;
  if (p >= end)
    return false;
  const char *sep = memchr(p, '\x01', (size_t)(end - p));
  if (!sep)
    return false;
  const char *vend = memchr(sep + 1, '\x02', (size_t)(end - sep - 1));
  if (!vend)
    vend = end; /* tolerate a missing final separator */
  *key = p;
  *key_len = (size_t)(sep - p);
  *val = sep + 1;
  *val_len = (size_t)(vend - sep - 1);
  *pos = vend < end ? vend + 1 : end;
  return true;
}

bool fy_props_get(const char *props, size_t props_len, const char *key, const char **val,
                  size_t *val_len) {
  size_t klen = strlen(key);
  const char *pos = props, *end = props + props_len, *k, *v;
  size_t kl, vl;
  while (fy_props_next(&pos, end, &k, &kl, &v, &vl)) {
    if (kl == klen && memcmp(k, key, klen) == 0) {
      *val = v;
      *val_len = vl;
      return true;
    }
  }
  return false;
}

int fy_props_add(char *buf, size_t cap, size_t *len, const char *key, const char *val,
                 size_t val_len) {
  size_t klen = strlen(key);
  if (memchr(key, '\x01', klen) || memchr(key, '\x02', klen) || memchr(val, '\x01', val_len) ||
      memchr(val, '\x02', val_len))
    return -EINVAL;
  if (*len + klen + val_len + 2 > cap)
    return -ENOSPC;
  char *p = buf + *len;
  memcpy(p, key, klen);
  p[klen] = '\x01';
  memcpy(p + klen + 1, val, val_len);
  p[klen + 1 + val_len] = '\x02';
  *len += klen + val_len + 2;
  return 0;
}

int32_t fy_tag_hash(const char *s, size_t len) {
  /* Java: h = 31*h + c over UTF-16 code units, in 32-bit wrapping arithmetic. */
  uint32_t h = 0;
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    uint32_t cp;
    unsigned char c = *p;
    int n;
    if (c < 0x80) { cp = c; n = 1; }
    else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; n = 2; }
    else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; n = 3; }
    else if ((c & 0xF8) == 0xF0) { cp = c & 0x07; n = 4; }
    else { cp = 0xFFFD; n = 1; } /* invalid lead byte: Java's decoder yields U+FFFD */
    if (n > 1) {
      if (end - p < n) { cp = 0xFFFD; n = 1; }
      else {
        for (int i = 1; i < n; i++) {
          if ((p[i] & 0xC0) != 0x80) { cp = 0xFFFD; n = 1; break; }
          cp = (cp << 6) | (p[i] & 0x3F);
        }
      }
    }
    p += n;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      h = 31 * h + (0xD800 + (cp >> 10));
      h = 31 * h + (0xDC00 + (cp & 0x3FF));
    } else {
      h = 31 * h + cp;
    }
  }
  return (int32_t)h;
}

bool fy_name_chars_ok(const char *name, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '%' || c == '|' || c == '_' || c == '-';
    if (!ok)
      return false;
  }
  return true;
}
