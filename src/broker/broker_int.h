/*
 * Internals shared by the broker's handler files (broker.c, send.c,
 * pull.c, admin.c). Not for use outside src/broker.
 */
#ifndef FY_BROKER_BROKER_INT_H
#define FY_BROKER_BROKER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/broker.h"
#include "broker/consumers.h"
#include "broker/groups.h"
#include "broker/offsets.h"
#include "broker/persist.h"
#include "broker/topics.h"
#include "common/hist.h"
#include "common/strmap.h"
#include "ferry.pb-c.h"
#include "ha/ha.h"
#include "net/conn.h"
#include "net/frame.h"
#include "net/rpc.h"
#include "store/store.h"

#define FY_NAMESRV_MAX 8
#define FY_PULL_TAGS_MAX 32

struct pending_send;
struct held_pull;
struct fy__sched;

#define FY_SCHEDULE_TOPIC "SCHEDULE_TOPIC_XXXX"

/* The protocols a client port speaks, told apart by a connection's first
 * byte (net/conn.h): Ferry's own frames, or RocketMQ 4.x remoting. */
enum fy_proto { FY_PROTO_NATIVE = 0, FY_PROTO_RMQ = 1 };

/* Where an answer that comes later goes: the request's protocol, its id
 * (native request id, or RocketMQ opaque) and its op (native op, or
 * RocketMQ request code). Copied into whatever waits (a pending send, a
 * held pull). */
struct fy_reqref {
  uint8_t proto;         /* enum fy_proto */
  uint8_t rmq_serialize; /* RocketMQ header encoding to answer in */
  uint8_t rmq_oneway;    /* RocketMQ one-way request: no answer at all */
  uint16_t op;
  uint64_t id;
};

/* Per-connection state (fy_conn_data). Requests whose answer comes later
 * (sends waiting for the disk, held pulls) are listed here so that a closing
 * connection can orphan or drop them. */
struct bconn {
  struct fy_broker *b;
  fy_conn *conn;
  struct pending_send *sends;
  struct held_pull *held;
  struct fy_host born;     /* the peer's address: the born host of its sends */
  uint8_t proto;           /* enum fy_proto, from the first bytes */
  uint8_t rmq_serialize;   /* RocketMQ: the header encoding the client last used */
};

struct ns_link {
  struct fy_broker *b;
  char host[64];
  int port;
  fy_conn *conn;
};

/* A pull request, decoded into Ferry's own fields. */
struct pull_req {
  struct fy_reqref ref;
  char group[FY_GROUP_NAME_MAX + 1];
  char topic[FY_TOPIC_NAME_MAX + 1];
  uint32_t queue_id;
  uint64_t offset;
  uint32_t max_msgs;
  uint32_t max_bytes;
  uint32_t suspend_ms;
  int64_t tags[FY_PULL_TAGS_MAX];
  size_t ntags;
};

struct held_pull {
  struct pull_req r;
  struct bconn *bc;
  uint64_t deadline_ms;
  size_t heap_idx;
  struct held_pull *q_prev, *q_next; /* the queue's list */
  struct held_pull *c_prev, *c_next; /* the connection's list */
  struct held_queue *hq;
};

struct held_queue {
  struct held_pull *head;
};

struct fy_broker {
  struct fy_broker_settings settings;
  const struct fy_broker_config *cfg; /* &settings.broker */
  uv_loop_t *loop;
  fy_store *store;
  fy_topics *topics;
  fy_offsets *offsets;
  fy_groups *groups;
  fy_consumers *consumers;
  fy_server *server;
  /* A consumer further behind than this reads from a slave (pull.c): fixed
   * at start, so a pull never reads /proc/meminfo. */
  uint64_t slave_read_threshold;
  struct fy_pb_arena send_arena; /* a send request is unpacked into this (send.c) */
  uint8_t *send_scratch;          /* a send's records and ids are built in this (send.c) */
  size_t send_scratch_cap;
  struct pending_send *pending_cache; /* answered single sends, for reuse (send.c) */
  size_t pending_cached;

  char ip[64];       /* brokerIP1 or detected */
  uint8_t ip4[4];
  char addr[80];     /* ip:port clients use */
  char ha_addr[80];

  struct ns_link ns[FY_NAMESRV_MAX];
  size_t nns;
  uv_timer_t register_timer;
  uv_timer_t housekeeping_timer;

  /* long polling */
  fy_strmap *held_queues; /* "topic\0qid" -> struct held_queue */
  struct held_pull **heap;
  size_t nheld;
  uv_timer_t poll_timer;

  fy_strmap *resets; /* "group\0topic\0qid" -> uint64_t* offset to hand out */
  fy_strmap *rmq_locks; /* RocketMQ queue locks (rmq.c), created on first use */
  uint64_t rmq_locks_swept_ms;
  struct fy__sched *sched; /* delayed messages (schedule.c) */

  /* HA: a master runs ha_master, a slave ha_slave and the metadata sync */
  struct fy_ha_config ha_cfg;
  fy_ha_master *ha_master;
  fy_ha_slave *ha_slave;
  char master_addr[80];      /* the master's client address, from the name server */
  fy_conn *master_conn;      /* slave -> master, for metadata */
  bool meta_inflight;
  uint64_t meta_syncs; /* metadata exchanges with the master completed (brokerStatus) */
  uv_timer_t meta_timer;

  /* round-robin queue choice for sends without a queue id */
  uint32_t rr;
  uint32_t uniq_counter;
  uint32_t pid; /* getpid() at start: a syscall, not to be made per message */
  int32_t rmq_opaque; /* opaque of the requests the broker sends RocketMQ clients */

  bool pull_ready; /* fy__pull_init succeeded: its timer is to be closed */
  char start_error[512]; /* why a start failed once the store was open ("": none) */
  bool stopping;
  int stop_status;
  void (*stop_done)(void *, int);
  void *stop_arg;
  unsigned stop_waits;
  unsigned handles_open;
  size_t nconns;
  bool closing_handles;

  uint64_t started_ms;
  uint64_t sends, send_msgs, send_failures, send_busy;
  uint64_t send_flush_timeouts;   /* sends answered FLUSH_DISK_TIMEOUT */
  int64_t flush_timeout_logged_ms; /* last warning about them (rate limit) */
  uint64_t pulls, pulled_msgs, pulls_held;
  struct fy_send_latency *send_lat; /* NULL: not measured (out of memory at start) */
};

/* Send latency: from a send reaching the store path (decoded and checked)
 * to its reply being queued on the connection, for every send that was
 * appended (its reply may still be an error, e.g. FLUSH_DISK_TIMEOUT).
 * Refusals before the store (bad request, unknown topic, busy) are not
 * timed. brokerStatus shows it since start, for the last full minute, and
 * as counts per band (RocketMQ's putMessageDistributeTime, finer). */
#define FY_SEND_LAT_BANDS 12
struct fy_send_latency {
  struct fy_hist total;       /* since start, in microseconds */
  struct fy_hist minute;      /* the minute in progress */
  struct fy_hist last_minute; /* the last full minute */
  uint64_t minute_start_ms;   /* monotonic */
  uint64_t bands[FY_SEND_LAT_BANDS]; /* since start; bounds in fy__send_lat_band_us */
};
extern const uint64_t fy__send_lat_band_us[FY_SEND_LAT_BANDS - 1]; /* upper bounds; the last band is open */
/* Empty, with its first minute starting at now_ns (uv_hrtime). */
void fy__send_latency_init(struct fy_send_latency *l, uint64_t now_ns);
void fy__send_latency_record(struct fy_send_latency *l, uint64_t arrived_ns, uint64_t now_ns);
/* "count=N p50=US p99=US p999=US max=US" since start (minute false) or for
 * the last full minute as of now_ns. */
void fy__send_latency_summary(struct fy_send_latency *l, bool minute, uint64_t now_ns, char *out,
                              size_t outlen);
/* "<=100us:N <=200us:N ... >1s:N": sends per band since start. */
void fy__send_latency_bands(const struct fy_send_latency *l, char *out, size_t outlen);

/* What a send stored, for its reply. */
struct fy_send_result {
  char msg_id[33];        /* UNIQ_KEY */
  char offset_msg_id[33]; /* store host + commit-log offset */
  uint64_t queue_offset;
};

/* broker.c (fy__now_ms comes from persist.h) */
void fy__broker_register_all(struct fy_broker *b);
bool fy__broker_refuse_if_stopping(struct fy_broker *b, fy_conn *conn, const fy_frame *f);
void fy__reply_decode_error(fy_conn *conn, const fy_frame *f);
/* Answers ref with an error: native status and printf text (RocketMQ
 * connections get the matching response code and the text as remark). */
void fy__reply_err(fy_conn *conn, const struct fy_reqref *ref, uint16_t status, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

/* send.c */
void fy__handle_send(struct fy_broker *b, struct bconn *bc, const fy_frame *f);
void fy__sends_conn_closed(struct bconn *bc);
void fy__offset_msg_id(const struct fy_broker *b, uint64_t phys, char out[33]);
/* A fresh UNIQ_KEY for a message sent without one. */
void fy__make_uniq_key(struct fy_broker *b, char out[33]);
/* The host of a peer string "a.b.c.d:port" or "[v6]:port"; all zero if
 * neither. */
void fy__parse_host(const char *peer, struct fy_host *h);
/* This broker's store host (IPv4 and client port). */
void fy__store_host(const struct fy_broker *b, struct fy_host *h);
/* Checks that this broker takes sends for topic (auto-creating it with
 * default_queues when allowed) and picks the queue: queue_id_in < 0 means
 * round robin. Returns 0 and *queue_id, or a native status with why. */
uint16_t fy__send_check_topic(struct fy_broker *b, const char *topic, int32_t queue_id_in,
                              uint32_t default_queues, uint32_t *queue_id, char *why,
                              size_t whylen);
/* Puts msgs[0..n) (complete but for what the store assigns) as one atomic
 * batch and answers ref on bc once they are stored under the flush rule
 * (and held by a slave under SYNC_MASTER). msg_ids[i] is message i's
 * UNIQ_KEY for the reply. Returns 0 (the answer will come), or a native
 * status with why (nothing was stored; the caller answers). */
uint16_t fy__send_put(struct fy_broker *b, struct bconn *bc, const struct fy_reqref *ref,
                      struct fy_msg *msgs, size_t n, char (*msg_ids)[33], char *why,
                      size_t whylen);
/* The records (zeroed), ids (zeroed) and props_len bytes of properties of
 * the send being handled, carved from one block the broker keeps instead
 * of three allocations per send. 0, or -ENOMEM if the block cannot grow.
 * Valid until fy__send_scratch_done, which the handler calls once
 * fy__send_put has returned (it keeps nothing in them). */
int fy__send_scratch(struct fy_broker *b, size_t n, size_t props_len, struct fy_msg **msgs,
                     char (**ids)[33], char **props);
void fy__send_scratch_done(struct fy_broker *b);
/* Frees the answered sends kept for reuse (at broker free). */
void fy__send_cache_free(struct fy_broker *b);

/* admin.c: subscription-group changes, from either protocol. Both refuse on
 * a slave (SERVICE_NOT_AVAILABLE: a slave copies the master's table). */
/* Creates or replaces the group cfg->name with every field of cfg. A
 * retry topic the group already has follows a new retryQueueNums (write
 * queues set to it, read queues never fewer). 0, or a native status with why. */
uint16_t fy__sub_group_update(struct fy_broker *b, const struct fy_group_config *cfg, char *why,
                              size_t whylen);
/* Deletes topic here: its configuration, its queues and every group's
 * offsets of it; re-registers with the name servers. 0, or a native status
 * with why (TOPIC_NOT_EXIST, or refused on a slave). */
uint16_t fy__topic_delete(struct fy_broker *b, const char *topic, char *why, size_t whylen);
/* Deletes group; with remove_offset its consumer offsets here go too (even
 * when the group has no configuration). 0, or a native status with why
 * (CONSUMER_GROUP_NOT_EXIST when there was no configuration). */
uint16_t fy__sub_group_delete(struct fy_broker *b, const char *group, bool remove_offset,
                              char *why, size_t whylen);

/* pull.c */
int fy__pull_init(struct fy_broker *b);
void fy__pull_close(struct fy_broker *b, uv_close_cb close_cb);
void fy__pull_free(struct fy_broker *b);
void fy__handle_pull(struct fy_broker *b, struct bconn *bc, const fy_frame *f);
void fy__pulls_conn_closed(struct bconn *bc);
void fy__pull_on_arrival(void *arg, const char *topic, size_t topic_len, uint32_t queue_id,
                         uint64_t max_offset);
int fy__reset_set(struct fy_broker *b, const char *group, const char *topic, uint32_t qid,
                  uint64_t offset);

/* ha glue in broker.c */
bool fy__is_sync_master(const struct fy_broker *b);

/* pull.c: checks that group may pull queue_id of topic here: 0, or a
 * native status with why. */
uint16_t fy__pull_check(struct fy_broker *b, const char *topic, const char *group,
                        uint32_t queue_id, char *why, size_t whylen);
/* Sets r's count, byte and wait limits from the request, within the broker's. */
void fy__pull_limits(struct fy_broker *b, struct pull_req *r, uint32_t max_msgs,
                     uint32_t max_bytes, uint32_t suspend_ms);
/* pull.c: runs a decoded pull (any protocol); holds it when asked to wait. */
void fy__pull_run(struct fy_broker *b, struct bconn *bc, const struct pull_req *r);
/* The broker id a consumer of r should pull from next (slave reads). */
uint64_t fy__pull_suggest(struct fy_broker *b, const struct pull_req *r,
                          const struct fy_get_result *res);

/* schedule.c: delayed messages (delay levels) */
int fy__schedule_start(struct fy_broker *b);
void fy__schedule_close(struct fy_broker *b, uv_close_cb close_cb);
void fy__schedule_free(struct fy_broker *b);
/* An entry arrived in the schedule topic's queue_id (its level - 1). */
void fy__schedule_wake(struct fy_broker *b, uint32_t queue_id);
/* Rewrites each message with a DELAY level into the schedule topic (real
 * topic and queue kept in REAL_TOPIC / REAL_QID); the new properties live
 * in *scratch, which the caller frees after the put. Returns 0, or -EINVAL
 * with why (a delayed message in a batch, properties too long). */
int fy__schedule_rewrite(struct fy_broker *b, struct fy_msg *msgs, size_t n, char **scratch,
                         const char **why);

/* Sets the DELAY level of the properties props[0..*len) (capacity cap).
 * 0, -ENOSPC or -ENOMEM. */
int fy__schedule_set_level(char *props, size_t cap, size_t *len, int level);

/* rmq.c: RocketMQ remoting on the client port */
size_t fy__rmq_on_bytes(fy_conn *conn, const uint8_t *bytes, size_t len);
void fy__rmq_free(struct fy_broker *b);
/* A consumer joined or left group: RocketMQ clients in it are told
 * (NOTIFY_CONSUMER_IDS_CHANGED) so they rebalance at once. */
void fy__rmq_group_changed(void *arg, const char *group);
void fy__rmq_reply_err(fy_conn *conn, const struct fy_reqref *ref, uint16_t status,
                       const char *text);
void fy__rmq_reply_send(struct fy_broker *b, fy_conn *conn, const struct fy_reqref *ref,
                        uint16_t status, uint32_t queue_id, const struct fy_send_result *res,
                        size_t n);
/* Answers a pull: msgs[0..res->count) found (released here), or a status. */
void fy__rmq_reply_pull(struct fy_broker *b, struct bconn *bc, const struct pull_req *r,
                        uint16_t status, const struct fy_get_result *res,
                        struct fy_get_msg *msgs);

/* admin.c: consumer, offset, topic, query and status requests */
void fy__handle_admin(struct fy_broker *b, struct bconn *bc, const fy_frame *f);

#endif
