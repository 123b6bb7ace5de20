/*
 * Ferry's error codes.
 *
 * Functions return 0 or a negative number: a negative errno passed up
 * unchanged from the kernel, libuv or io_uring, or a negative FY_E* code from
 * the table below for conditions that have no errno of their own. The codes
 * start well above any errno so the two never collide, and fy_strerror()
 * names both.
 */
#ifndef FY_COMMON_ERR_H
#define FY_COMMON_ERR_H

#define FY_ERR_BASE 10000

/* X(name, text) */
#define FY_ERR_TABLE(X)                                                              \
  X(CORRUPT,      "record failed validation (magic, length, CRC or offset)")         \
  X(TOO_BIG,      "message larger than maxMessageSize")                              \
  X(BUSY,         "busy: a buffer or queue is full, try again")                      \
  X(STORE_FAILED, "store refused the write after an earlier disk error")             \
  X(DISK_FULL,    "disk usage above the configured limit; writes refused")           \
  X(DISCONTIG,    "bytes do not continue the log at this offset")                    \
  X(NOT_FOUND,    "no such entry")                                                   \
  X(CONFIG,       "bad configuration")                                               \
  X(SHUTDOWN,     "store is shutting down")                                          \
  X(LOCKED,       "store directory is locked by another process")                    \
  X(FRAME_MAGIC,  "frame does not start with the magic 'FY'")                        \
  X(FRAME_VERSION,"unsupported frame version")                                       \
  X(FRAME_KIND,   "unknown frame kind")                                              \
  X(FRAME_TOO_BIG,"frame payload larger than the frame limit")                       \
  X(FRAME_HEADER, "frame header section longer than its payload")                    \
  X(DECODE,       "protobuf header section malformed or over its allocation limit")  \
  X(TIMEOUT,      "no response within the call's timeout")                           \
  X(CLOSED,       "connection closed")                                               \
  X(TOPIC_NOT_EXIST, "topic does not exist on the name servers or the broker")      \
  X(MSG_ILLEGAL,  "message refused as illegal (size, topic or properties)")          \
  X(REMOTE_BUSY,  "broker busy (flow control); try again later")                     \
  X(UNAVAILABLE,  "service not available (disk full, store failed, slave or stopping)") \
  X(NO_PERMISSION,"no permission for this operation on this broker or topic")        \
  X(BAD_REQUEST,  "request refused as malformed")                                    \
  X(REMOTE_ERROR, "remote system error")                                             \
  X(UNSUPPORTED,  "operation not supported by the peer")                             \
  X(NO_SUBSCRIPTION, "subscription does not exist")                                  \
  X(NO_GROUP,     "consumer group does not exist")                                   \
  X(NO_BROKER,    "no broker available for the topic or queue in its route")

enum {
  FY__ERR_FIRST = FY_ERR_BASE - 1,
#define FY__ERR_ENUM(name, text) FY_E##name,
  FY_ERR_TABLE(FY__ERR_ENUM)
#undef FY__ERR_ENUM
  FY__ERR_LAST
};

/* Text for 0, a negative errno or a negative FY_E* code. Never NULL. */
const char *fy_strerror(int err);

/* The short symbolic name ("EIO", "CORRUPT"), for logs and status strings. */
const char *fy_errname(int err);

#endif
