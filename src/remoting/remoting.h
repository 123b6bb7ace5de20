/*
 * RocketMQ 4.x "remoting" codec: the frames, command headers and message
 * layouts unchanged RocketMQ clients speak, as bytes in and structs out and
 * back. Knows no sockets, no libuv and no broker; the port handlers do.
 *
 * Frame: [u32 BE total = 4 + header + body][u32 BE serialize << 24 | header len]
 *        [header][body]
 * The header is JSON (type 0, what ali-ons and the Java client send by
 * default) or RocketMQ's compact binary layout (type 1). The format, what
 * Ferry accepts leniently and the limits are in docs/ROCKETMQ_COMPAT.md.
 */
#ifndef FY_REMOTING_REMOTING_H
#define FY_REMOTING_REMOTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/record.h"

#define FY_RMQ_JSON 0     /* header serialization type (top byte of the header-length word) */
#define FY_RMQ_ROCKETMQ 1 /* RocketMQ's compact binary header encoding */
#define FY_RMQ_FLAG_RESPONSE 0x1
#define FY_RMQ_FLAG_ONEWAY 0x2
#define FY_RMQ_EXT_MAX 64             /* ext fields per command; more = -FY_EDECODE */
#define FY_RMQ_HEADER_MAX (64u << 10) /* header bytes; more = -FY_EFRAME_TOO_BIG */
#define FY_RMQ_PREFIX_LEN 8u          /* total-length word + header-length word */
/* The "version" Ferry puts in the commands it builds: RocketMQ 4.9.4's
 * MQVersion ordinal, what a 4.9.4 broker and name server send. */
#define FY_RMQ_VERSION 401

/* Message magics of the stored-message layout (MessageDecoder). */
#define FY_RMQ_MSG_MAGIC_V1 0xDAA320A7u /* 1-byte topic length (4.x) */
#define FY_RMQ_MSG_MAGIC_V2 0xDAA320ABu /* 2-byte topic length (5.x), topics > 127 bytes */

typedef struct fy_rmq_kv {
  char *key;
  char *val;
} fy_rmq_kv; /* NUL-terminated, owned by the cmd */

/* A parsed command. Strings are owned by the cmd (fy_rmq_cmd_free); body
 * points into the buffer given to fy_rmq_parse and is valid as long as it. */
typedef struct fy_rmq_cmd {
  int32_t code, version, opaque, flag;
  uint8_t serialize;  /* FY_RMQ_JSON or FY_RMQ_ROCKETMQ: answer in the same */
  char language[16];  /* "JAVA", "NODE", ... (as sent, cut at 15 bytes; "" if absent) */
  char *remark;       /* NULL if absent */
  fy_rmq_kv ext[FY_RMQ_EXT_MAX];
  size_t next;
  char *arena;                /* holds every ext key and value: one allocation */
  size_t arena_len, arena_cap;
  const uint8_t *body; /* points into the parsed buffer */
  uint32_t body_len;
} fy_rmq_cmd;

/*
 * Parses one frame at the start of buf. Returns >0 bytes consumed (cmd
 * filled; free with fy_rmq_cmd_free), 0 when more bytes are needed (nothing
 * allocated, cmd zeroed), or (nothing allocated, cmd zeroed):
 *   -FY_EFRAME_TOO_BIG  total > frame_max, or header > FY_RMQ_HEADER_MAX
 *                       (both seen in the first 8 bytes, before any allocation)
 *   -FY_EFRAME_HEADER   total < 4, unknown serialize type, header > total - 4
 *   -FY_EDECODE         header not a JSON object / valid binary header, a
 *                       field of the wrong type, missing code, > FY_RMQ_EXT_MAX
 *                       ext fields
 * Checks run in that order: frame_max, total < 4, type, FY_RMQ_HEADER_MAX,
 * header > total - 4. JSON headers: code, language, version, opaque, flag,
 * remark, extFields; numbers as JSON integers or decimal strings; ext values
 * strings, integers, reals or booleans, all kept as strings; null = absent.
 * Never crashes or leaks on any input; allocates O(header bytes).
 */
ssize_t fy_rmq_parse(const uint8_t *buf, size_t len, uint32_t frame_max, fy_rmq_cmd *cmd);
/* Frees what the cmd owns and zeroes it; safe on a zeroed cmd and twice. */
void fy_rmq_cmd_free(fy_rmq_cmd *cmd);
const char *fy_rmq_ext(const fy_rmq_cmd *cmd, const char *key); /* NULL if absent */
/* Decimal integer ("-12", "+3"; no spaces, no decimals): 0, -ENOENT, -EINVAL. */
int fy_rmq_ext_i64(const fy_rmq_cmd *cmd, const char *key, int64_t *out);
/* "true"/"false" (case-insensitive): 0, -ENOENT, -EINVAL. */
int fy_rmq_ext_bool(const fy_rmq_cmd *cmd, const char *key, bool *out);

/* A command header to send (response or request). */
typedef struct fy_rmq_out {
  int32_t code, opaque, flag, version; /* version = FY_RMQ_VERSION from the builders */
  uint8_t serialize;
  char remark[512];
  bool has_remark;
  struct {
    char key[64];
    char *val;
  } ext[FY_RMQ_EXT_MAX];
  size_t next; /* vals malloc'd; freed by fy_rmq_out_free */
} fy_rmq_out;

/* Initialises *o as the response to req: same opaque and serialize type,
 * flag = RESPONSE, the given code (0 = SUCCESS) and an optional remark
 * (printf format, NULL for none; cut at 511 bytes on a UTF-8 boundary). */
void fy_rmq_out_response(fy_rmq_out *o, const fy_rmq_cmd *req, int32_t code,
                         const char *remark_fmt, ...) __attribute__((format(printf, 4, 5)));
/* Initialises *o as a request (flag ONEWAY when oneway). */
void fy_rmq_out_request(fy_rmq_out *o, int32_t code, int32_t opaque, uint8_t serialize,
                        bool oneway);
/* Sets an ext field (a key already set gets the new value). 0, -ENOSPC (too
 * many), -ENOMEM, -EINVAL (key empty or longer than 63 bytes). */
int fy_rmq_out_str(fy_rmq_out *o, const char *key, const char *val);
int fy_rmq_out_i64(fy_rmq_out *o, const char *key, int64_t v);
/*
 * Encodes the frame prefix + header for a body of body_len bytes (the body
 * itself is sent separately): *out (malloc'd, caller frees) =
 * [u32 total][u32 type<<24|hlen][header]. JSON output is RocketMQ's:
 * {"code":N,"extFields":{"k":"v",...},"flag":F,"language":"JAVA","opaque":N,
 *  "remark":"...","serializeTypeCurrentRPC":"JSON","version":V}
 * (remark only when set, extFields always, ext values as JSON strings in the
 * order set; bytes that are not UTF-8 become '?'). ROCKETMQ type: the binary
 * layout. 0, -ENOMEM, or -EMSGSIZE when the header exceeds 24 bits of length
 * or the total 32 bits.
 */
int fy_rmq_out_encode(const fy_rmq_out *o, uint32_t body_len, uint8_t **out, size_t *out_len);
void fy_rmq_out_free(fy_rmq_out *o);

/*
 * RocketMQ 4.x stored-message layout (PULL_MESSAGE and query-by-id bodies;
 * big-endian): TOTALSIZE, MAGIC, BODYCRC (CRC32 of the body & 0x7FFFFFFF),
 * QUEUEID, FLAG, QUEUEOFFSET, PHYSICALOFFSET, SYSFLAG, BORNTIMESTAMP, BORNHOST
 * (4 ip + 4 port, 16 + 4 when v6), STORETIMESTAMP, STOREHOST, RECONSUMETIMES,
 * PREPARED_TX_OFFSET, BODYLEN + body, TOPICLEN (1) + topic, PROPLEN (2) + props.
 * Input is a decoded Ferry record. sys_flag passes through except its host
 * bits, which follow born_host.v6 / store_host.v6. Topics longer than 127
 * bytes get FY_RMQ_MSG_MAGIC_V2 and a 2-byte topic length.
 */
uint32_t fy_rmq_msg_size(const struct fy_msg *m); /* 0 if it would not fit in 32 bits */
uint32_t fy_rmq_msg_encode(const struct fy_msg *m, uint8_t *out); /* writes fy_rmq_msg_size(m) bytes */
/* The inverse, for tests and tools: parses the message at p (avail bytes).
 * Returns its size (> 0) and fills *out (pointers into p; total_size set),
 * -EAGAIN when avail holds only a prefix, -FY_EDECODE when it is not a
 * message (magic, lengths that do not add up, a body CRC that does not match). */
int64_t fy_rmq_msg_decode(const uint8_t *p, size_t avail, struct fy_msg *out);
/* zlib's CRC32 (fy_rmq_crc32(0, "123456789", 9) == 0xCBF43926), chainable. */
uint32_t fy_rmq_crc32(uint32_t crc, const void *buf, size_t len);
/* RocketMQ's offsetMsgId: upper-case hex of ip(4) port(4 BE) offset(8 BE). */
void fy_rmq_offset_msg_id(const uint8_t ip4[4], uint32_t port, uint64_t phys, char out[33]);
/* Its inverse (hex of either case, exactly 32 digits): 0 or -EINVAL. */
int fy_rmq_offset_msg_id_parse(const char *id, uint8_t ip4[4], uint32_t *port, uint64_t *phys);

/* SEND_BATCH_MESSAGE bodies: entries TOTALSIZE(4) MAGIC(4) BODYCRC(4) FLAG(4)
 * BODYLEN(4)+body PROPLEN(2)+props, big-endian (MessageDecoder.encodeMessage;
 * 4.9 clients send 0 for MAGIC and BODYCRC, which are not checked). */
typedef struct fy_rmq_batch_msg {
  int32_t flag;
  const uint8_t *body;
  uint32_t body_len;
  const char *props; /* not NUL-terminated */
  uint16_t props_len;
} fy_rmq_batch_msg;
/* Returns 1 and fills *m (pointing into *p, then advancing *p and *len), 0 at
 * the end, -FY_EDECODE on a malformed entry (*p and *len unchanged). */
int fy_rmq_batch_next(const uint8_t **p, size_t *len, fy_rmq_batch_msg *m);

/*
 * Subscription expression "TagA || TagB" / "*" / "" -> tags, trimmed of
 * spaces, duplicates dropped. Empty alternatives ("A || || B", "A ||") are
 * skipped, as RocketMQ's FilterAPI does. Returns the count (0 means "all":
 * NULL, empty, blank, or an alternative "*"), -E2BIG over max, -EINVAL when
 * there is no tag but only separators ("||", " || ": RocketMQ refuses the
 * first and matches nothing with the second), -ENOSPC when expr does not fit
 * in buf.
 * tags[i] point into the copy kept in buf (size bufsize).
 */
int fy_rmq_tags_parse(const char *expr, char *buf, size_t bufsize, const char **tags, size_t max);

/* SEND_MESSAGE_V2's short ext-field name for a SendMessageRequestHeader field
 * ("producerGroup" -> "a", ... "batch" -> "m"); NULL if it has none. */
const char *fy_rmq_send_v2_field(const char *long_name);

/* Request codes (RocketMQ 4.9 RequestCode.java). X(name, number) */
#define FY_RMQ_REQ_TABLE(X)                                                                     \
  X(SEND_MESSAGE, 10) X(PULL_MESSAGE, 11) X(QUERY_MESSAGE, 12) X(QUERY_BROKER_OFFSET, 13)      \
  X(QUERY_CONSUMER_OFFSET, 14) X(UPDATE_CONSUMER_OFFSET, 15) X(UPDATE_AND_CREATE_TOPIC, 17)    \
  X(GET_ALL_TOPIC_CONFIG, 21) X(GET_TOPIC_CONFIG_LIST, 22) X(GET_TOPIC_NAME_LIST, 23)          \
  X(UPDATE_BROKER_CONFIG, 25) X(GET_BROKER_CONFIG, 26) X(TRIGGER_DELETE_FILES, 27)             \
  X(GET_BROKER_RUNTIME_INFO, 28) X(SEARCH_OFFSET_BY_TIMESTAMP, 29) X(GET_MAX_OFFSET, 30)       \
  X(GET_MIN_OFFSET, 31) X(GET_EARLIEST_MSG_STORETIME, 32) X(VIEW_MESSAGE_BY_ID, 33)            \
  X(HEART_BEAT, 34) X(UNREGISTER_CLIENT, 35) X(CONSUMER_SEND_MSG_BACK, 36)                     \
  X(END_TRANSACTION, 37) X(GET_CONSUMER_LIST_BY_GROUP, 38) X(CHECK_TRANSACTION_STATE, 39)      \
  X(NOTIFY_CONSUMER_IDS_CHANGED, 40) X(LOCK_BATCH_MQ, 41) X(UNLOCK_BATCH_MQ, 42)               \
  X(GET_ALL_CONSUMER_OFFSET, 43) X(GET_ALL_DELAY_OFFSET, 45) X(CHECK_CLIENT_CONFIG, 46)        \
  X(PUT_KV_CONFIG, 100) X(GET_KV_CONFIG, 101) X(DELETE_KV_CONFIG, 102)                         \
  X(REGISTER_BROKER, 103) X(UNREGISTER_BROKER, 104) X(GET_ROUTEINFO_BY_TOPIC, 105)             \
  X(GET_BROKER_CLUSTER_INFO, 106) X(UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, 200)                  \
  X(GET_ALL_SUBSCRIPTIONGROUP_CONFIG, 201) X(GET_TOPIC_STATS_INFO, 202)                        \
  X(GET_CONSUMER_CONNECTION_LIST, 203) X(GET_PRODUCER_CONNECTION_LIST, 204)                    \
  X(WIPE_WRITE_PERM_OF_BROKER, 205) X(GET_ALL_TOPIC_LIST_FROM_NAMESERVER, 206)                 \
  X(DELETE_SUBSCRIPTIONGROUP, 207) X(GET_CONSUME_STATS, 208) X(SUSPEND_CONSUMER, 209)          \
  X(RESUME_CONSUMER, 210) X(RESET_CONSUMER_OFFSET_IN_CONSUMER, 211)                            \
  X(RESET_CONSUMER_OFFSET_IN_BROKER, 212) X(ADJUST_CONSUMER_THREAD_POOL, 213)                  \
  X(WHO_CONSUME_THE_MESSAGE, 214) X(DELETE_TOPIC_IN_BROKER, 215) X(DELETE_TOPIC_IN_NAMESRV, 216) \
  X(GET_KVLIST_BY_NAMESPACE, 219) X(RESET_CONSUMER_CLIENT_OFFSET, 220)                         \
  X(GET_CONSUMER_STATUS_FROM_CLIENT, 221) X(INVOKE_BROKER_TO_RESET_OFFSET, 222)                \
  X(INVOKE_BROKER_TO_GET_CONSUMER_STATUS, 223) X(GET_TOPICS_BY_CLUSTER, 224)                   \
  X(QUERY_TOPIC_CONSUME_BY_WHO, 300) X(QUERY_CONSUME_TIME_SPAN, 303)                           \
  X(GET_SYSTEM_TOPIC_LIST_FROM_NS, 304) X(GET_SYSTEM_TOPIC_LIST_FROM_BROKER, 305)              \
  X(CLEAN_EXPIRED_CONSUMEQUEUE, 306) X(GET_CONSUMER_RUNNING_INFO, 307)                         \
  X(QUERY_CORRECTION_OFFSET, 308) X(CONSUME_MESSAGE_DIRECTLY, 309) X(SEND_MESSAGE_V2, 310)      \
  X(GET_UNIT_TOPIC_LIST, 311) X(CLONE_GROUP_OFFSET, 314) X(VIEW_BROKER_STATS_DATA, 315)        \
  X(CLEAN_UNUSED_TOPIC, 316) X(GET_BROKER_CONSUME_STATS, 317) X(UPDATE_NAMESRV_CONFIG, 318)    \
  X(GET_NAMESRV_CONFIG, 319) X(SEND_BATCH_MESSAGE, 320) X(QUERY_CONSUME_QUEUE, 321)            \
  X(QUERY_DATA_VERSION, 322) X(RESUME_CHECK_HALF_MESSAGE, 323) X(SEND_REPLY_MESSAGE, 324)      \
  X(SEND_REPLY_MESSAGE_V2, 325) X(PUSH_REPLY_MESSAGE_TO_CLIENT, 326)                           \
  X(ADD_WRITE_PERM_OF_BROKER, 327)

/* Response codes (RemotingSysResponseCode.java + ResponseCode.java, 4.9). */
#define FY_RMQ_RESP_TABLE(X)                                                                    \
  X(SUCCESS, 0) X(SYSTEM_ERROR, 1) X(SYSTEM_BUSY, 2) X(REQUEST_CODE_NOT_SUPPORTED, 3)           \
  X(TRANSACTION_FAILED, 4) X(FLUSH_DISK_TIMEOUT, 10) X(SLAVE_NOT_AVAILABLE, 11)                 \
  X(FLUSH_SLAVE_TIMEOUT, 12) X(MESSAGE_ILLEGAL, 13) X(SERVICE_NOT_AVAILABLE, 14)                \
  X(VERSION_NOT_SUPPORTED, 15) X(NO_PERMISSION, 16) X(TOPIC_NOT_EXIST, 17)                      \
  X(TOPIC_EXIST_ALREADY, 18) X(PULL_NOT_FOUND, 19) X(PULL_RETRY_IMMEDIATELY, 20)                \
  X(PULL_OFFSET_MOVED, 21) X(QUERY_NOT_FOUND, 22) X(SUBSCRIPTION_PARSE_FAILED, 23)              \
  X(SUBSCRIPTION_NOT_EXIST, 24) X(SUBSCRIPTION_NOT_LATEST, 25)                                  \
  X(SUBSCRIPTION_GROUP_NOT_EXIST, 26) X(FILTER_DATA_NOT_EXIST, 27)                              \
  X(FILTER_DATA_NOT_LATEST, 28) X(TRANSACTION_SHOULD_COMMIT, 200)                               \
  X(TRANSACTION_SHOULD_ROLLBACK, 201) X(TRANSACTION_STATE_UNKNOW, 202)                          \
  X(TRANSACTION_STATE_GROUP_WRONG, 203) X(NO_BUYER_ID, 204) X(NOT_IN_CURRENT_UNIT, 205)         \
  X(CONSUMER_NOT_ONLINE, 206) X(CONSUME_MSG_TIMEOUT, 207) X(NO_MESSAGE, 208)

enum fy_rmq_req_code {
#define FY__RMQ_REQ_ENUM(name, num) FY_RMQ_REQ_##name = num,
  FY_RMQ_REQ_TABLE(FY__RMQ_REQ_ENUM)
#undef FY__RMQ_REQ_ENUM
};

enum fy_rmq_resp_code {
#define FY__RMQ_RESP_ENUM(name, num) FY_RMQ_RESP_##name = num,
  FY_RMQ_RESP_TABLE(FY__RMQ_RESP_ENUM)
#undef FY__RMQ_RESP_ENUM
};

/* "SEND_MESSAGE_V2" for 310, for logs; NULL if unknown. */
const char *fy_rmq_req_name(int32_t code);
const char *fy_rmq_resp_name(int32_t code);

#endif
