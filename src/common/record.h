/*
 * The commit-log record: Ferry's on-disk and on-wire unit of a stored message.
 *
 * A record is self-describing and self-validating. All integers are
 * little-endian. The field order follows RocketMQ 4.x's stored-message layout
 * so that the RocketMQ protocol adapter maps one onto the other field by
 * field; the differences are the byte order, a CRC32C over the whole record in
 * place of RocketMQ's body CRC, and a 2-byte topic length.
 *
 *   off  size  field
 *     0     4  total_size         whole record, this field included
 *     4     4  magic              FY_RECORD_MAGIC
 *     8     4  crc                CRC32C of bytes [0,8) then [12,total_size)
 *    12     4  queue_id
 *    16     4  flag               user flag, opaque to Ferry
 *    20     8  queue_offset       logical index in the consume queue
 *    28     8  phys_offset        this record's own commit-log offset
 *    36     4  sys_flag           FY_SYSFLAG_* bits (RocketMQ's values)
 *    40     8  born_ts_ms
 *    48  8|20  born_host          IPv4 (4) + port (4), or IPv6 (16) + port (4)
 *     .     8  store_ts_ms
 *     .  8|20  store_host         as born_host
 *     .     4  reconsume_times
 *     .     8  prepared_tx_offset
 *     .     4  body_len, then the body
 *     .     2  topic_len, then the topic (1..FY_TOPIC_MAX bytes)
 *     .     2  props_len, then the properties: "key\x01value\x02" repeated
 *
 * A record is valid when: the magic matches, total_size equals the size the
 * length fields add up to, the CRC matches, and phys_offset equals the offset
 * the record was read from. Anything else is corruption or the end of the log.
 *
 * The end-of-segment marker is 8 bytes, [u32 remaining][u32 FY_BLANK_MAGIC],
 * where remaining is the number of bytes left in the segment from the marker's
 * offset; a reader that meets it continues at the next segment. A record is
 * only placed in a segment when record size + FY_BLANK_SIZE <= bytes left, so
 * there is always room for the marker.
 */
#ifndef FY_COMMON_RECORD_H
#define FY_COMMON_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FY_RECORD_MAGIC 0xFE4D5301u
#define FY_BLANK_MAGIC 0xFE4D5B00u
#define FY_BLANK_SIZE 8u
#define FY_RECORD_FIXED_V4 92u  /* a record with empty body/topic/props, IPv4 hosts */
#define FY_TOPIC_MAX 255u       /* RocketMQ limits topics to 127 chars; Ferry allows 255 bytes */
#define FY_PROPS_MAX 32767u     /* RocketMQ's limit */
#define FY_RECORD_HEADER_MIN 12u /* bytes needed to read size, magic and crc */

/* sys_flag bits, identical to RocketMQ's MessageSysFlag. */
#define FY_SYSFLAG_COMPRESSED 0x1u
#define FY_SYSFLAG_MULTI_TAGS 0x2u
#define FY_SYSFLAG_TRANS_PREPARED 0x4u
#define FY_SYSFLAG_TRANS_COMMIT 0x8u
#define FY_SYSFLAG_TRANS_ROLLBACK 0xCu
#define FY_SYSFLAG_TRANS_MASK 0xCu
#define FY_SYSFLAG_BORNHOST_V6 0x10u
#define FY_SYSFLAG_STOREHOST_V6 0x20u

/* Whether a record goes into its consume queue: all do but a transaction's
 * prepared and rolled-back messages, which consumers must never see. */
static inline bool fy_sysflag_queued(uint32_t sys_flag) {
  uint32_t tx = sys_flag & FY_SYSFLAG_TRANS_MASK;
  return tx != FY_SYSFLAG_TRANS_PREPARED && tx != FY_SYSFLAG_TRANS_ROLLBACK;
}
#define FY_SYSFLAG_INNER_BATCH 0x80u

/* Property keys (RocketMQ's names, so the RocketMQ adapter passes them through). */
#define FY_PROP_TAGS "TAGS"
#define FY_PROP_KEYS "KEYS" /* space-separated */
#define FY_PROP_UNIQ_KEY "UNIQ_KEY"
#define FY_PROP_DELAY "DELAY"
#define FY_PROP_REAL_TOPIC "REAL_TOPIC"
#define FY_PROP_REAL_QID "REAL_QID"
#define FY_PROP_RETRY_TOPIC "RETRY_TOPIC"
#define FY_PROP_WAIT "WAIT"

struct fy_host {
  uint8_t ip[16]; /* IPv4 in the first 4 bytes when !v6 */
  uint32_t port;
  bool v6;
};

/*
 * A message as fields. For encoding, the caller fills every field (pointers
 * must stay valid until fy_record_encode returns); sys_flag's host bits are
 * derived from born_host.v6/store_host.v6 and need not be set. After
 * fy_record_decode, pointers point into the decoded bytes.
 */
struct fy_msg {
  uint32_t total_size;
  uint32_t queue_id;
  uint32_t flag;
  uint64_t queue_offset;
  uint64_t phys_offset;
  uint32_t sys_flag;
  int64_t born_ts_ms;
  struct fy_host born_host;
  int64_t store_ts_ms;
  struct fy_host store_host;
  uint32_t reconsume_times;
  uint64_t prepared_tx_offset;
  const uint8_t *body;
  uint32_t body_len;
  const char *topic;
  uint16_t topic_len;
  const char *props;
  uint16_t props_len;
};

/* Encoded size of m, or 0 if a field is out of range (empty or long topic, long props). */
uint32_t fy_record_size(const struct fy_msg *m);

/* Writes m to dst (fy_record_size(m) bytes, which the caller has checked is
 * nonzero) and seals it with its CRC. Returns the size written. */
uint32_t fy_record_encode(const struct fy_msg *m, uint8_t *dst);

/*
 * Rewrites the fields a store assigns at append time (queue offset, physical
 * offset, store timestamp) in an encoded record and recomputes its CRC.
 */
void fy_record_restamp(uint8_t *rec, uint64_t queue_offset, uint64_t phys_offset,
                       int64_t store_ts_ms);

enum fy_record_kind { FY_REC_MSG, FY_REC_BLANK };

/*
 * Validates the bytes at p, which were read from commit-log offset phys.
 * avail is how many bytes may be examined (up to the end of the segment or of
 * the data received). Returns the entry's size (> 0) and sets *kind; for a
 * message also fills *out (if out is not NULL) with pointers into p.
 *   -EAGAIN       p holds the start of what may be a valid entry but fewer
 *                 than its size bytes are available (replication: wait for more;
 *                 recovery at a segment end: a torn tail).
 *   -FY_ECORRUPT  not a valid entry (includes zero bytes: the end of the log).
 */
int64_t fy_record_decode(const uint8_t *p, size_t avail, uint64_t phys, enum fy_record_kind *kind,
                         struct fy_msg *out);

/* fy_record_decode without the CRC check, for bytes this process encoded
 * itself and has not let out of its control since (the commit log's own
 * appends, dispatched from the page cache they were just written to). Every
 * other check is made. Never for bytes read from disk or the network. */
int64_t fy_record_decode_own(const uint8_t *p, size_t avail, uint64_t phys,
                             enum fy_record_kind *kind, struct fy_msg *out);

/* Writes the end-of-segment marker for `remaining` bytes left at dst. */
void fy_record_encode_blank(uint8_t *dst, uint32_t remaining);

/* Steps through a "k\x01v\x02" property string: the property at *pos
 * (below end), its name and value pointing into the string; *pos moves past
 * it. False at the end, or at a tail with no \x01. A missing final \x02 is
 * tolerated. */
bool fy_props_next(const char **pos, const char *end, const char **key, size_t *key_len,
                   const char **val, size_t *val_len);

/* True if name[0, len) uses only RocketMQ's characters for topic and group
 * names, [%|a-zA-Z0-9_-]. */
bool fy_name_chars_ok(const char *name, size_t len);

/* Looks up key in a "k\x01v\x02" property string. Returns true and sets
 * *val and *val_len (pointing into props) when found (the first one). */
bool fy_props_get(const char *props, size_t props_len, const char *key, const char **val,
                  size_t *val_len);

/* Appends "key\x01value\x02" to buf (of capacity cap, holding *len bytes).
 * Returns 0 or -ENOSPC when it does not fit (buf unchanged). Keys and values
 * must not contain \x01 or \x02 (-EINVAL). */
int fy_props_add(char *buf, size_t cap, size_t *len, const char *key, const char *val,
                 size_t val_len);

/* Java String.hashCode() of a UTF-8 string taken as UTF-16 code units: the tag
 * hash RocketMQ clients compute, kept in consume-queue entries. */
int32_t fy_tag_hash(const char *s, size_t len);

#endif
