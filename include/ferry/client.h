/*
 * Ferry's C client library: producers, pull and push consumers, and the
 * admin calls mqadmin is built on. RocketMQ's client model and defaults
 * (namesrvAddr, producer/consumer groups, tags and keys, clustering and
 * broadcasting, 3 attempts within sendMsgTimeout, rebalancing with
 * AllocateMessageQueueAveragely, offsets committed every 5 s).
 *
 * THREADS
 *   One fy_client runs one libuv loop on a background thread, the client
 *   thread; every network operation happens there. Every function in this
 *   header is thread-safe unless it says otherwise: it posts its work to
 *   the client thread through a bounded queue and, if it is synchronous,
 *   waits for the answer on a condition variable with a deadline.
 *     - Callbacks of asynchronous sends (fy_send_cb) and queue selectors run
 *       ON THE CLIENT THREAD. Keep them short: while one runs, the client
 *       does no network work. They may start more asynchronous sends; a
 *       synchronous call made from the client thread fails with -EDEADLK.
 *     - Push-consumer listeners run on the consumer's own consume threads
 *       (fy_push_config.consume_threads) and may call anything here,
 *       synchronous calls included, except closing their own consumer.
 *
 * DEADLINES
 *   Every call has one: the timeout_ms argument or option, or when that is
 *   0 the default named next to it. A call never blocks past its deadline
 *   (plus a small margin for the client thread to answer), whatever the
 *   brokers and name servers do; it then fails with -FY_ETIMEOUT. A call
 *   that timed out may still have taken effect (a message stored whose
 *   answer came too late): delivery is at-least-once.
 *
 * ERRORS
 *   Functions return 0 or a negative code: a negative errno, or a negative
 *   FY_E* code from Ferry's error table (common/err.h, included below).
 *   Broker and name-server statuses map to FY_E* codes (TOPIC_NOT_EXIST ->
 *   -FY_ETOPIC_NOT_EXIST, SYSTEM_BUSY -> -FY_EREMOTE_BUSY, ...).
 *   fy_client_strerror() names any of them; fy_client_last_error() gives the
 *   detail of the calling thread's last failed call (which broker, what
 *   it said). If a function that takes a callback fails, the callback
 *   never runs.
 *
 * LIFETIMES
 *   Handles (fy_client, fy_producer, fy_pull_consumer, fy_push_consumer)
 *   are opaque and valid from their _new until their _close returns. Close
 *   every producer and consumer before their client. Strings and buffers
 *   passed in are copied before the call returns unless a function says
 *   otherwise. Every result pointer handed out (fy_pull_result,
 *   fy_topic_route, ...) is one allocation owned by the caller and freed
 *   with fy_result_free(); the pointers inside it live as long as it does.
 */
#ifndef FERRY_CLIENT_H
#define FERRY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FY_CLIENT_TOPIC_MAX 128 /* bytes of a topic name, NUL included: RocketMQ's 127
                                   (TOPIC_MAX_LENGTH), as brokers accept */
#define FY_CLIENT_GROUP_MAX 256 /* producer and consumer groups, NUL included: RocketMQ's 255
                                   (Validators.CHARACTER_MAX_LENGTH), as brokers accept */
#define FY_CLIENT_NAME_MAX 128  /* brokerName and cluster names, NUL included */
#define FY_CLIENT_ADDR_MAX 64   /* "host:port", NUL included */
#define FY_CLIENT_MSGID_MAX 64  /* message ids: 32 hex chars (IPv4 store hosts), NUL included */

typedef struct fy_client fy_client;
typedef struct fy_producer fy_producer;
typedef struct fy_pull_consumer fy_pull_consumer;
typedef struct fy_push_consumer fy_push_consumer;

typedef struct fy_kv {
  const char *key;
  const char *value;
} fy_kv;

/* ================================================================ client */

/* A zeroed struct is valid except for namesrv_addr; each 0 means the
 * default shown. Copied by fy_client_new. */
typedef struct fy_client_config {
  const char *namesrv_addr;        /* "host:port;host:port": tried in turn; required */
  const char *instance_name;       /* client id is "ip@instance_name": the pid, with "#n"
                                    * appended for the n-th client of the process (n > 1) */
  uint32_t timeout_ms;             /* default deadline of calls given 0: 3000 */
  uint32_t connect_timeout_ms;     /* TCP connect: 3000 */
  uint32_t route_refresh_ms;       /* pollNameServerInterval: 30000 */
  uint32_t heartbeat_interval_ms;  /* heartbeatBrokerInterval: 30000 */
  uint32_t queue_max;              /* requests waiting for the client thread: 8192 */
  uint32_t frame_max_bytes;        /* largest frame sent or received: 16 MiB */
} fy_client_config;

/* Starts a client and its thread. Returns 0 and *out, -EINVAL (no or bad
 * namesrv_addr), -ENOMEM, or a thread/libuv error. Connects lazily. */
int fy_client_new(const fy_client_config *cfg, fy_client **out);

/* "ip@instance": what brokers list in a consumer group. Valid as long as
 * the client. */
const char *fy_client_id(const fy_client *cl);

/* Stops the client thread and frees the client. Producers and consumers
 * still open are closed first (their handles become invalid). Calls in
 * progress on other threads fail with -FY_ECLOSED. Must not be called from
 * a callback or listener. */
void fy_client_close(fy_client *cl);

/* Text for any code this library returns. Never NULL. */
const char *fy_client_strerror(int err);

/* What the calling thread's last failed call said in detail, e.g.
 * "broker-a 10.0.0.5:10911: SYSTEM_BUSY: commit log write buffers full";
 * "" after a success. Valid until the thread's next call into the library. */
const char *fy_client_last_error(void);

/* Frees any result this library handed out; NULL is fine. */
void fy_result_free(void *result);

/* A message queue: a topic's queue queue_id on the broker group broker_name. */
typedef struct fy_queue {
  char topic[FY_CLIENT_TOPIC_MAX];
  char broker_name[FY_CLIENT_NAME_MAX];
  uint32_t queue_id;
} fy_queue;

typedef struct fy_queue_list {
  size_t n;
  const fy_queue *queues; /* sorted by broker_name, then queue_id */
} fy_queue_list;

/* The topic's queues from its route (fetched from the name servers if
 * not cached): writable=true gives the queues a producer sends to (write
 * queues of brokers with a master), false the ones consumers read (read
 * queues of every brokerName). *out is freed with fy_result_free.
 * timeout_ms 0: the client's timeout_ms. -FY_ETOPIC_NOT_EXIST if the name
 * servers know no such topic. */
int fy_client_topic_queues(fy_client *cl, const char *topic, bool writable, uint32_t timeout_ms,
                           fy_queue_list **out);

/* Offsets of a queue, asked of its master (or of a slave when the route
 * has no master). search: the offset of the first message stored at or
 * after timestamp_ms (RocketMQ's searchOffset). */
int fy_client_min_offset(fy_client *cl, const fy_queue *q, uint32_t timeout_ms, uint64_t *out);
int fy_client_max_offset(fy_client *cl, const fy_queue *q, uint32_t timeout_ms, uint64_t *out);
int fy_client_search_offset(fy_client *cl, const fy_queue *q, int64_t timestamp_ms,
                            uint32_t timeout_ms, uint64_t *out);

/* ============================================================== messages */

/* A message to send. Every pointer must remain valid until the send call
 * returns (fy_producer_send_async copies the message before returning). */
typedef struct fy_message {
  const char *topic;
  const void *body;
  size_t body_len;
  const char *tags;   /* NULL: no tag */
  const char *keys;   /* space-separated keys for query by key; NULL: none */
  const fy_kv *props; /* user properties (RocketMQ's names are reserved: DELAY, ...) */
  size_t nprops;
  uint32_t flag;      /* the user flag, stored as is */
} fy_message;

/* A received message. Every pointer is into the result that holds it
 * (fy_pull_result, fy_message_list) or, for push consumers, valid until
 * the listener returns. Strings are NUL-terminated; absent ones are "". */
typedef struct fy_message_view {
  const char *topic;
  const char *broker_name;   /* brokerName of the queue */
  uint64_t broker_id;        /* the broker that served it: 0 master, > 0 a slave */
  uint32_t queue_id;
  uint64_t queue_offset;
  uint64_t commitlog_offset;
  const uint8_t *body;
  size_t body_len;
  const char *tags;
  const char *keys;
  const char *msg_id;        /* UNIQ_KEY: the producer's id; offset_msg_id if there is none */
  const char *offset_msg_id; /* store host + commit-log offset, hex (RocketMQ's formula) */
  int64_t born_ts_ms;
  int64_t store_ts_ms;
  const char *born_host;     /* "ip:port" */
  const char *store_host;
  uint32_t flag;
  uint32_t sys_flag;
  uint32_t reconsume_times;  /* push consumers add local redeliveries (FY_CONSUME_LATER) */
  size_t nprops;
  const fy_kv *props;        /* every property as stored, TAGS/KEYS/UNIQ_KEY included */
} fy_message_view;

typedef struct fy_message_list {
  size_t n;
  const fy_message_view *msgs;
} fy_message_list;

/* ============================================================== producer */

typedef struct fy_producer_config {
  const char *group;             /* producerGroup: required */
  uint32_t send_timeout_ms;      /* sendMsgTimeout, all attempts together: 3000 */
  uint32_t max_attempts;         /* retryTimesWhenSendFailed + 1: 3 */
  uint32_t max_inflight;         /* asynchronous sends not yet called back: 10000 */
  uint32_t max_message_bytes;    /* maxMessageSize: body, or a batch's bodies: 4 MiB */
  uint32_t default_topic_queues; /* defaultTopicQueueNums, for topics the broker creates: 4 */
  bool retry_when_not_stored_ok; /* retryAnotherBrokerWhenNotStoreOK: false */
} fy_producer_config;

int fy_producer_new(fy_client *cl, const fy_producer_config *cfg, fy_producer **out);

/* Waits for the producer's asynchronous sends to be called back (each has
 * its deadline), unregisters the group from the brokers and frees it. Not
 * from the client thread (an async send callback): -EDEADLK, nothing done. */
int fy_producer_close(fy_producer *p);

/* Picks a queue among nqueues (the topic's writable queues, sorted by
 * brokerName and queue id): returns an index < nqueues. Runs on the client
 * thread, once per attempt; arg is fy_send_options.selector_arg. */
typedef size_t (*fy_queue_selector)(const char *topic, size_t nqueues, void *arg);

typedef struct fy_send_options {
  uint32_t timeout_ms;         /* 0: the producer's send_timeout_ms */
  fy_queue_selector selector;  /* NULL: round-robin over the writable queues */
  void *selector_arg;          /* must remain valid until the send returns or calls back */
} fy_send_options;

/* A send's outcome. status is only meaningful when the send returned or
 * reported 0: the message is stored. FLUSH_DISK_TIMEOUT,
 * FLUSH_SLAVE_TIMEOUT and SLAVE_NOT_AVAILABLE mean stored on the master
 * only (not yet flushed / not replicated): only SEND_OK survives the loss
 * of the master. */
typedef enum fy_send_status {
  FY_SEND_OK = 0,
  FY_SEND_FLUSH_DISK_TIMEOUT = 1,
  FY_SEND_FLUSH_SLAVE_TIMEOUT = 2,
  FY_SEND_SLAVE_NOT_AVAILABLE = 3,
} fy_send_status;

typedef struct fy_send_result {
  fy_send_status status;
  char msg_id[FY_CLIENT_MSGID_MAX];        /* UNIQ_KEY, generated here: set even on failure */
  char offset_msg_id[FY_CLIENT_MSGID_MAX];
  char broker_name[FY_CLIENT_NAME_MAX];
  uint32_t queue_id;
  uint64_t queue_offset;
  uint32_t attempts;                       /* brokers tried */
  char error[256];                         /* on failure: the last attempt's error in words */
} fy_send_result;

/* Sends msg and waits: up to max_attempts attempts, each retry on another
 * brokerName when there is one, all within the timeout. Retries after
 * network errors and TOPIC_NOT_EXIST, SERVICE_NOT_AVAILABLE, SYSTEM_ERROR,
 * NO_PERMISSION and SYSTEM_BUSY (with a selector: on the queue it picks).
 * An attempt is given all the time left, so one that times out ends the
 * send with -FY_ETIMEOUT (the broker may still have stored it). A cached
 * route with no master to write to is fetched again before the send gives
 * up with NO_BROKER, so a restarted master is used as soon as it has
 * registered. opts may be NULL. Returns 0 (stored; res->status says
 * how) or an error; res (may be NULL) is filled either way. Refused at
 * once with -EINVAL, nothing sent: a topic name that is empty, too long
 * or not of [%|a-zA-Z0-9_-] (brokers accept no other), control bytes
 * \x01/\x02 in tags, keys or properties. */
int fy_producer_send(fy_producer *p, const fy_message *msg, const fy_send_options *opts,
                     fy_send_result *res);

/* The result of an asynchronous send: err as fy_producer_send returns it;
 * res is valid only during the callback. Runs on the client thread. */
typedef void (*fy_send_cb)(int err, const fy_send_result *res, void *arg);

/* Copies msg and returns; cb(err, res, arg) runs once on the client thread
 * when the send is done. When max_inflight sends are outstanding this waits
 * for one to finish, up to the send timeout (-FY_EBUSY after; on the client
 * thread it does not wait). Returns 0 or an error (cb will not run).
 * A broker connection carries at most 4096 requests at once; more wait in
 * the client, in order, until answers make room (16,384 may wait per
 * connection), so max_inflight sends may all go to one broker. */
int fy_producer_send_async(fy_producer *p, const fy_message *msg, const fy_send_options *opts,
                           fy_send_cb cb, void *arg);

/* Sends n messages of one topic as one batch, stored together with
 * consecutive queue offsets on one queue; same retries as a single send.
 * results (n entries, may be NULL) are filled either way. */
int fy_producer_send_batch(fy_producer *p, const fy_message *msgs, size_t n,
                           const fy_send_options *opts, fy_send_result *results);

/* The result of an asynchronous batch: err as fy_producer_send_batch
 * returns it; res holds n results (one per message, in order), valid only
 * during the callback. Runs on the client thread. */
typedef void (*fy_send_batch_cb)(int err, const fy_send_result *res, size_t n, void *arg);

/* fy_producer_send_batch without waiting: copies the n messages and
 * returns; cb runs once on the client thread when the batch is done. The
 * batch counts as one send towards max_inflight (and waits for room like
 * fy_producer_send_async). Returns 0 or an error (cb will not run). */
int fy_producer_send_batch_async(fy_producer *p, const fy_message *msgs, size_t n,
                                 const fy_send_options *opts, fy_send_batch_cb cb, void *arg);

/* ========================================================= pull consumer */

typedef enum fy_pull_status {
  FY_PULL_FOUND = 0,          /* msgs holds what matched (possibly none after the client's
                               * re-check of tag strings); continue at next_offset */
  FY_PULL_NO_NEW_MSG = 1,     /* nothing new after the long poll */
  FY_PULL_NO_MATCHED_MSG = 2, /* filtered out, or a slave not serving: continue at next_offset */
  FY_PULL_OFFSET_ILLEGAL = 3, /* offset out of range or reset: continue at next_offset */
} fy_pull_status;

typedef struct fy_pull_options {
  const char *expression;      /* "TagA || TagB", "*" or NULL: every tag */
  uint32_t max_msgs;           /* 32 */
  uint32_t max_bytes;          /* 4 MiB */
  uint32_t suspend_timeout_ms; /* long poll: the broker holds an empty pull this long: 0 */
  uint32_t timeout_ms;         /* 0: suspend_timeout_ms + 5000 when long polling, else the
                                * client's timeout_ms */
  bool pin_broker_id;          /* true: pull from broker_id (1: a slave) whatever the broker
                                * suggested last, falling back like a suggestion when that
                                * broker is not in the route; false: as suggested */
  uint64_t broker_id;
} fy_pull_options;

typedef struct fy_pull_result {
  fy_pull_status status;
  uint64_t next_offset;
  uint64_t min_offset;
  uint64_t max_offset;
  uint64_t suggest_broker_id; /* remembered: the next pull of this queue goes there */
  uint64_t broker_id;         /* who served this pull (0 master) */
  size_t nmsgs;
  const fy_message_view *msgs;
} fy_pull_result;

/* A consumer that pulls the queues and offsets its caller chooses
 * (RocketMQ's DefaultMQPullConsumer). group is copied. */
int fy_pull_consumer_new(fy_client *cl, const char *group, fy_pull_consumer **out);
void fy_pull_consumer_close(fy_pull_consumer *c);

/* Pulls from q at offset. The pull goes to the broker the last response
 * for q suggested (a slave when the master is busy), falling back to the
 * master and then any broker of the brokerName when that one has left the
 * route. opts may be NULL. *out is freed with fy_result_free. */
int fy_pull_consumer_pull(fy_pull_consumer *c, const fy_queue *q, uint64_t offset,
                          const fy_pull_options *opts, fy_pull_result **out);

/* The group's committed offset for q: -FY_ENOT_FOUND if it never committed. */
int fy_pull_consumer_fetch_offset(fy_pull_consumer *c, const fy_queue *q, uint32_t timeout_ms,
                                  uint64_t *out);
/* Commits offset (the next message to consume) for the group, on the
 * master, or on a slave when the route has no master. */
int fy_pull_consumer_commit_offset(fy_pull_consumer *c, const fy_queue *q, uint64_t offset,
                                   uint32_t timeout_ms);

/* ========================================================= push consumer */

typedef enum fy_consume_result {
  FY_CONSUME_SUCCESS = 0,
  FY_CONSUME_LATER = 1, /* redeliver these messages later (after retry_delay_ms, doubling up
                         * to 60 s); the queue's committed offset stays below them */
} fy_consume_result;

/* Called on a consume thread with 1..consume_batch_max messages of one
 * queue, in queue order. The views are valid until it returns. */
typedef fy_consume_result (*fy_consume_cb)(const fy_message_view *const *msgs, size_t n,
                                           void *arg);

typedef enum fy_message_model {
  FY_CLUSTERING = 0,   /* the group shares the queues; offsets on the brokers */
  FY_BROADCASTING = 1, /* every consumer reads every queue; offsets in a local file */
} fy_message_model;

/* Where a queue starts when the group has no committed offset for it. */
typedef enum fy_consume_from {
  FY_FROM_LAST_OFFSET = 0,  /* CONSUME_FROM_LAST_OFFSET: only new messages */
  FY_FROM_FIRST_OFFSET = 1, /* CONSUME_FROM_FIRST_OFFSET */
  FY_FROM_TIMESTAMP = 2,    /* CONSUME_FROM_TIMESTAMP: from_timestamp_ms */
} fy_consume_from;

typedef struct fy_push_config {
  const char *group;                /* consumerGroup: required */
  fy_consume_cb listener;           /* required */
  void *listener_arg;
  fy_message_model model;           /* messageModel: FY_CLUSTERING */
  fy_consume_from from;             /* consumeFromWhere: FY_FROM_LAST_OFFSET */
  int64_t from_timestamp_ms;        /* consumeTimestamp: 30 minutes before start */
  uint32_t consume_threads;         /* consumeThreadMin: 20 */
  uint32_t consume_batch_max;       /* consumeMessageBatchMaxSize: 1 */
  uint32_t pull_batch_size;         /* pullBatchSize: 32 */
  uint32_t queue_buffer_max_msgs;   /* pullThresholdForQueue: 1000 */
  uint32_t queue_buffer_max_bytes;  /* pullThresholdSizeForQueue: 100 MiB */
  uint32_t suspend_timeout_ms;      /* long poll: 15000 */
  uint32_t rebalance_interval_ms;   /* full rebalance, the topic's route re-read: 20000 */
  uint32_t group_check_interval_ms; /* the group's members and the route's queues are checked
                                     * this often; a change rebalances at once (the protocol
                                     * has no "group changed" notice): 2000 */
  uint32_t commit_interval_ms;      /* persistConsumerOffsetInterval: 5000 */
  uint32_t retry_delay_ms;          /* first redelivery after FY_CONSUME_LATER: 1000 */
  const char *offset_store_dir;     /* broadcasting offsets: $HOME/.ferry_offsets */
} fy_push_config;

/* Creates a consumer (nothing runs until start). subscribe, start and
 * close of one consumer are for one thread at a time; fy_push_consumer_owned
 * may be called from any thread. cfg and its strings are copied. For
 * broadcasting, offsets live in offset_store_dir/<group>@<instance>.offsets
 * (instance: the client's instance_name, or "default"), read here. */
int fy_push_consumer_new(fy_client *cl, const fy_push_config *cfg, fy_push_consumer **out);

/* Subscribes to topic with a tag expression ("TagA || TagB", "*" or NULL
 * for all). Before fy_push_consumer_start only; at most 64 topics.
 * -EINVAL for a bad expression, a topic name brokers would refuse, or a
 * topic subscribed twice. Group names are checked the same way when the
 * consumer is made. */
int fy_push_consumer_subscribe(fy_push_consumer *c, const char *topic, const char *expression);

/* Registers with the brokers (heartbeat), rebalances and starts pulling
 * and consuming. Returns once started; queues are assigned shortly after. */
int fy_push_consumer_start(fy_push_consumer *c);

/* Stops pulling, waits for running listeners to return, commits the
 * offsets (to the brokers, or the local file) and unregisters from the
 * brokers, all within about the client's timeout_ms; then frees c.
 * Buffered messages not yet consumed are redelivered to whoever owns their
 * queue next. Not from a listener of c: -EDEADLK, nothing done. */
int fy_push_consumer_close(fy_push_consumer *c);

/* The queues this consumer owns now and the offset each would commit.
 * *out is freed with fy_result_free. */
typedef struct fy_owned_queue {
  fy_queue queue;
  uint64_t commit_offset;
  uint32_t buffered_msgs;
} fy_owned_queue;
typedef struct fy_owned_queues {
  size_t n;
  const fy_owned_queue *queues;
} fy_owned_queues;
int fy_push_consumer_owned(fy_push_consumer *c, fy_owned_queues **out);

/* =================================================================== admin */

typedef struct fy_broker_addr {
  uint64_t broker_id; /* 0 master */
  const char *addr;
} fy_broker_addr;

typedef struct fy_broker_info {
  const char *cluster;
  const char *broker_name;
  size_t naddrs;
  const fy_broker_addr *addrs; /* by broker_id */
} fy_broker_info;

typedef struct fy_queue_data {
  const char *broker_name;
  uint32_t read_queues;
  uint32_t write_queues;
  uint32_t perm; /* RocketMQ bits: 4 read, 2 write, 1 inherit */
} fy_queue_data;

typedef struct fy_topic_route {
  size_t nqueues;
  const fy_queue_data *queues;
  size_t nbrokers;
  const fy_broker_info *brokers;
} fy_topic_route;

typedef struct fy_cluster_info {
  size_t nbrokers;
  const fy_broker_info *brokers; /* sorted by cluster, then broker_name */
} fy_cluster_info;

typedef struct fy_string_list {
  size_t n;
  const char *const *items;
} fy_string_list;

typedef struct fy_kv_list {
  size_t n;
  const fy_kv *items;
} fy_kv_list;

typedef struct fy_topic_config {
  const char *topic;
  uint32_t read_queues;  /* 0: 8 (defaultTopicQueueNums of mqadmin updateTopic) */
  uint32_t write_queues; /* 0: 8 */
  uint32_t perm;         /* 0: 6 (read and write) */
  bool order;
} fy_topic_config;

typedef struct fy_topic_config_list {
  size_t n;
  const fy_topic_config *items;
} fy_topic_config_list;

/* A subscription group's configuration on a broker (RocketMQ's
 * SubscriptionGroupConfig). Start from fy_sub_group_config_init: an update
 * replaces every field, as RocketMQ's does. */
typedef struct fy_sub_group_config {
  const char *group;
  bool consume_enable;                        /* true; false: the broker refuses its pulls */
  bool consume_from_min_enable;               /* true (kept, not acted on) */
  bool consume_broadcast_enable;              /* true (kept, not acted on) */
  uint32_t retry_queue_nums;                  /* 1; 0: failed messages are dropped; <= 1024 */
  uint32_t retry_max_times;                   /* 16: then to %DLQ%<group> */
  uint64_t broker_id;                         /* 0: pulls are suggested to this broker id */
  uint64_t which_broker_when_consume_slowly;  /* 1: ... when the consumer is far behind */
  bool notify_consumer_ids_changed_enable;    /* true: members told of group changes */
} fy_sub_group_config;

typedef struct fy_sub_group_config_list {
  size_t n;
  const fy_sub_group_config *items; /* sorted by group */
} fy_sub_group_config_list;

typedef struct fy_queue_status {
  const char *broker_name;
  uint32_t queue_id;
  uint64_t min_offset;
  uint64_t max_offset;
  int err; /* 0, or why the offsets could not be read (they are then 0) */
} fy_queue_status;

typedef struct fy_topic_status {
  size_t n;
  const fy_queue_status *queues; /* by broker_name, then queue_id */
} fy_topic_status;

typedef struct fy_queue_progress {
  const char *topic;
  const char *broker_name;
  uint32_t queue_id;
  uint64_t broker_offset;   /* the queue's max offset */
  uint64_t consumer_offset; /* the group's committed offset */
  uint64_t lag;             /* broker_offset - consumer_offset, 0 if negative */
  int64_t last_timestamp;
} fy_queue_progress;

typedef struct fy_consumer_progress {
  size_t n;
  const fy_queue_progress *queues; /* by topic, broker_name, queue_id */
  uint64_t total_lag;
  size_t brokers_failed;           /* brokers that did not answer within the deadline */
} fy_consumer_progress;

/* Creates or updates a topic on one broker (broker_addr) or on every
 * master of a cluster (cluster; broker_addr NULL). */
int fy_admin_update_topic(fy_client *cl, const char *broker_addr, const char *cluster,
                          const fy_topic_config *cfg, uint32_t timeout_ms);
/* Deletes a topic from one broker, or from every master of a cluster. */
int fy_admin_delete_topic(fy_client *cl, const char *broker_addr, const char *cluster,
                          const char *topic, uint32_t timeout_ms);
/* Every topic the name servers know. */
int fy_admin_topic_list(fy_client *cl, uint32_t timeout_ms, fy_string_list **out);
/* A topic's route, fresh from the name servers. */
int fy_admin_topic_route(fy_client *cl, const char *topic, uint32_t timeout_ms,
                         fy_topic_route **out);
/* Min and max offset of every read queue of the topic, on every brokerName
 * (its master, or a slave without master). */
int fy_admin_topic_status(fy_client *cl, const char *topic, uint32_t timeout_ms,
                          fy_topic_status **out);
/* Every broker the name servers know, by cluster. */
int fy_admin_cluster_list(fy_client *cl, uint32_t timeout_ms, fy_cluster_info **out);
/* A broker's status entries. */
int fy_admin_broker_status(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                           fy_kv_list **out);
/* A broker's replication status: its role and log end; for a master, per
 * slave: address, connected since, received and durable offsets, lag in
 * bytes and ms; for a slave: state, master, lag, last error. */
int fy_admin_ha_status(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                       fy_kv_list **out);
/* A broker's topic configurations. */
int fy_admin_topic_configs(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                           fy_topic_config_list **out);
/* RocketMQ's defaults (those of an auto-created group) for group, which is
 * not copied: it must stay valid while cfg is used. */
void fy_sub_group_config_init(fy_sub_group_config *cfg, const char *group);
/* Creates or replaces a subscription group on one broker (broker_addr) or
 * on every master of a cluster (cluster; broker_addr NULL). A slave refuses
 * (-FY_EUNAVAILABLE): it copies its master's groups. A field out of range
 * is -FY_EBAD_REQUEST, fy_client_last_error() naming it. */
int fy_admin_update_sub_group(fy_client *cl, const char *broker_addr, const char *cluster,
                              const fy_sub_group_config *cfg, uint32_t timeout_ms);
/* Deletes a subscription group from one broker, or from every master of a
 * cluster; remove_offset also forgets the group's consumer offsets there.
 * -FY_ENO_GROUP when no broker had the group. Its %RETRY% and %DLQ% topics
 * stay (fy_admin_delete_topic removes them). */
int fy_admin_delete_sub_group(fy_client *cl, const char *broker_addr, const char *cluster,
                              const char *group, bool remove_offset, uint32_t timeout_ms);
/* A broker's subscription groups (a slave's: the copy it holds). */
int fy_admin_sub_group_configs(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                               fy_sub_group_config_list **out);
/* The group's offsets and lag per queue, from every brokerName serving
 * topic (or every brokerName of every cluster when topic is NULL). */
int fy_admin_consumer_progress(fy_client *cl, const char *group, const char *topic,
                               uint32_t timeout_ms, fy_consumer_progress **out);
/* Moves the group's offsets on topic to the first message stored at or
 * after timestamp_ms, on every brokerName of the topic. */
int fy_admin_reset_offset_by_time(fy_client *cl, const char *group, const char *topic,
                                  int64_t timestamp_ms, uint32_t timeout_ms);
/* The message with this offset msg id, asked of the broker whose address
 * the id encodes (or of broker_addr when not NULL). */
int fy_admin_query_by_id(fy_client *cl, const char *offset_msg_id, const char *broker_addr,
                         uint32_t timeout_ms, fy_message_list **out);
/* Messages of topic with key among their KEYS (or UNIQ_KEY), stored within
 * [begin_ts_ms, end_ts_ms] (0, 0: any time), at most max (0: 32) per
 * brokerName, from every brokerName of the topic. */
int fy_admin_query_by_key(fy_client *cl, const char *topic, const char *key, uint32_t max,
                          int64_t begin_ts_ms, int64_t end_ts_ms, uint32_t timeout_ms,
                          fy_message_list **out);

#ifdef __cplusplus
}
#endif

#endif
