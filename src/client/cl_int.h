/*
 * Internals of the client library (src/client); not for use outside it,
 * except by its unit tests.
 *
 * Map of the library:
 *   client.c    the client thread, the bounded request queue, operations
 *               (fy__op: deadline timer, sync wait, refcount), heartbeats
 *   conns.c     connections by address: connect on first use, calls queued
 *               while connecting, name-server calls with failover
 *   route.c     the topic route cache, its refresh, queue lists, broker
 *               address choice (publish / subscribe / admin)
 *   result.c    result arenas, received-message decoding, tag expressions,
 *               message ids
 *   producer.c  sends: queue choice, retries, results
 *   pull.c      the pull consumer and the pull request both consumers use
 *   push.c      the push consumer: rebalance, process queues, consume
 *               threads, offset commits
 *   alloc.c     AllocateMessageQueueAveragely (pure)
 *   admin.c     admin calls
 *
 * Everything marked "loop" runs on the client thread only.
 */
#ifndef FY_CLIENT_CL_INT_H
#define FY_CLIENT_CL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/record.h"
#include "common/strmap.h"
#include "ferry.pb-c.h"
#include "ferry/client.h"
#include "net/conn.h"
#include "net/rpc.h"

#define FY__NS_MAX 16             /* name servers in namesrv_addr */
#define FY__SUBS_MAX 64           /* topics per push consumer */
#define FY__TAGS_MAX 64           /* tags in one subscription expression */
#define FY__EXPR_MAX 1024         /* bytes of a subscription expression */
#define FY__TOPICS_MAX 4096       /* routes cached */
#define FY__CONNS_MAX 1024        /* open connections */
#define FY__PENDING_MAX 16384     /* calls waiting for one connection: to open, or for
                                     room among its rpc_pending_max (4096) calls */
#define FY__WAITERS_MAX 65536     /* operations waiting for one route */
#define FY__DRAIN_PER_WAKE 256    /* requests taken from the queue per wake-up */
#define FY__DLISTS 8              /* deadline lists: 7 for one timeout each, 1 shared */
#define FY__EXPIRE_PER_TICK 4096  /* operations timed out per deadline-timer firing */
#define FY__SYNC_MARGIN_MS 1000   /* a sync caller waits this much past the deadline */
#define FY__EXCEPTION_DELAY_MS 3000 /* PULL_TIME_DELAY_MILLS_WHEN_EXCEPTION */
#define FY__DEFAULT_TOPIC "TBW102"  /* RocketMQ's createTopicKey */
#define FY__DOWN_MS 5000           /* how long a failed connect marks an address down */

uint64_t fy__cl_now_ms(void);     /* monotonic (uv_hrtime), both threads */
int64_t fy__cl_wall_ms(void);     /* CLOCK_REALTIME */

/* Sets the calling thread's detail text (fy_client_last_error). */
void fy__set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Checks a topic or group name as brokers will: 1 to cap - 1 bytes of
 * [%|a-zA-Z0-9_-]. On failure sets the last error, naming what ("topic",
 * "consumer group", ...) in RocketMQ's words, and returns -EINVAL. */
int fy__cl_name_check(const char *what, const char *name, size_t cap);

/* Protocol status -> 0 or -FY_E*. */
int fy__cl_status_err(uint16_t status);
const char *fy__cl_status_name(uint16_t status);
/* Network-level failure (the peer never answered): worth another broker. */
bool fy__cl_err_is_network(int err);

/* Deep copy of a protobuf message (pack + unpack); free with fy_pb_free. */
ProtobufCMessage *fy__cl_pb_dup(const ProtobufCMessage *m);

/* =============================================================== client */

struct fy__op;
struct fy__rentry;

struct fy_client {
  fy_client_config cfg;
  char *cfg_namesrv;               /* owned copies of cfg strings */
  char client_id[FY_CLIENT_NAME_MAX + 64];
  char instance_name[FY_CLIENT_NAME_MAX]; /* as configured, "" if not */
  uint8_t ip[4];                   /* for message ids */
  uint32_t msgid_rand;
  uint32_t pid;                    /* getpid() at start (a syscall: not per message) */
  pthread_t thread;
  uv_loop_t loop;
  uv_async_t async;
  /* request queue (mu) */
  pthread_mutex_t mu;
  pthread_cond_t space_cv;
  struct fy__op **ring;
  uint32_t ring_cap, ring_head, ring_count;
  bool closing;                    /* no more posts */
  bool close_now;                  /* loop: shut down */
  /* loop */
  bool loop_closing;
  char ns[FY__NS_MAX][FY_CLIENT_ADDR_MAX];
  size_t nns;
  size_t ns_cur;                   /* the name server in use */
  fy_strmap *conns;                /* addr -> struct fy__bconn */
  fy_strmap *down;                 /* addr -> until (ms) + 1: failed connects */
  fy_strmap *routes;               /* topic -> struct fy__rentry */
  uv_timer_t route_timer;
  uv_timer_t hb_timer;
  struct fy__dlist {               /* live (started, not completed) ops, by deadline */
    uint32_t timeout_ms;
    struct fy__op *head, *tail;
  } dl[FY__DLISTS];
  uv_timer_t deadline_timer;       /* armed for the earliest head */
  uint64_t deadline_armed_ms;      /* UINT64_MAX: not armed */
  uv_idle_t reap_idle;             /* drops the loop's reference to completed ops */
  struct fy__op *reap;             /* completed this turn (loop) */
  bool reap_active, reap_closed;
  struct fy_producer *producers;   /* registered producers (loop) */
  struct fy_push_consumer *consumers; /* started push consumers (loop) */
  /* handles owned (mu) */
  struct fy_producer *all_producers;
  struct fy_push_consumer *all_push;
  struct fy_pull_consumer *all_pull;
};

/* True on the client thread. */
bool fy__on_loop(const fy_client *cl);

/* ============================================================ operations */

/*
 * An operation: one request of a public call, carried out on the loop.
 *
 *   caller: fy__op_init -> fy__op_post --queue--> loop: start()
 *   loop:   ... rpcs, route waits ... -> fy__op_complete(err) -> finish()
 *   sync caller: fy__op_wait() until complete or deadline + margin
 *
 * The loop keeps started ops in deadline lists under one timer (client.c)
 * and completes an op with -FY_ETIMEOUT at its deadline, whatever is still
 * in flight. References: one for the loop (dropped on the loop turn after
 * completion), one for a sync caller (dropped by fy__op_unref after the
 * wait), one per rpc or wait in flight (fy__op_call and the route wait
 * take and drop theirs). The last reference frees the op (destroy, then
 * free). Results are written by the loop before completion and read by
 * the caller after it, under cl->mu's happens-before.
 */
typedef void (*fy__op_fn)(struct fy__op *op);

struct fy__op {
  fy_client *cl;
  atomic_int refs;
  fy__op_fn start;     /* loop: begin */
  fy__op_fn finish;    /* loop: completed (async result delivery); may be NULL */
  fy__op_fn destroy;   /* free the op's own fields; may be NULL */
  fy__op_fn release;   /* instead of free(op) at the end (a cache); may be NULL */
  uint64_t deadline_ms;
  uint32_t timeout_ms;
  uint8_t dl;          /* its deadline list while live (loop) */
  bool started;
  bool must_run;       /* start runs even if the deadline passed while queued
                        * (lifecycle ops: unlinking must happen) */
  bool completed;      /* loop */
  int err;
  char errtext[256];
  struct fy__op *lprev, *lnext; /* its deadline list while started, not completed (loop) */
  struct fy__op *reap_next;     /* cl->reap once completed (loop) */
  bool sync;
  bool done;           /* mu */
  bool seen_done;      /* caller thread: the wait saw it done (results readable) */
  pthread_cond_t cv;
};

/* Sets up op (zeroed by the caller, size of the containing struct). */
void fy__op_init(struct fy__op *op, fy_client *cl, uint32_t timeout_ms, bool sync,
                 fy__op_fn start, fy__op_fn finish, fy__op_fn destroy);
/* Queues op for the loop, waiting for room until its deadline. Returns 0,
 * -FY_ECLOSED, -FY_EBUSY (queue full until the deadline), -EDEADLK (sync
 * op on the client thread). On error the op is freed. */
int fy__op_post(struct fy__op *op);
/* Sync caller: waits for completion. Returns op->err, or -FY_ETIMEOUT if
 * the loop did not complete it in time. Copies the detail text to the
 * thread. The caller reads its results (if 0) and then calls fy__op_unref. */
int fy__op_wait(struct fy__op *op);
/* The same without giving up: for lifecycle ops whose effect the caller
 * must see before freeing what they refer to. The loop completes every
 * op by its deadline, so this ends unless the client thread is stuck in a
 * user callback. */
int fy__op_wait_forever(struct fy__op *op);
/* post + wait; on a post failure the op is already freed and so is the
 * caller's reference: return without unref (*posted false). */
int fy__op_run(struct fy__op *op, bool *posted);
void fy__op_ref(struct fy__op *op);
void fy__op_unref(struct fy__op *op);
/* loop: decides the op's outcome once; later calls are ignored. */
void fy__op_complete(struct fy__op *op, int err);
/* loop: records the detail text for a failure. */
void fy__op_errtext(struct fy__op *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint32_t fy__op_remaining(const struct fy__op *op); /* ms, at least 1 */

/* A call for op (loop): addr, op code, msg and raw as for fy__call;
 * timeout_ms 0 means the op's remaining time. cb runs only if the op has
 * not completed meanwhile. Returns 0 or an error (cb will not run). */
typedef void (*fy__op_rpc_cb)(struct fy__op *op, int err, const fy_frame *resp, void *ctx);
int fy__op_call(struct fy__op *op, const char *addr, uint16_t code, const ProtobufCMessage *msg,
                const uv_buf_t *raw, unsigned nraw, uint32_t timeout_ms, fy__op_rpc_cb cb,
                void *ctx);
/* The same against the name servers, with failover. */
int fy__op_ns_call(struct fy__op *op, uint16_t code, const ProtobufCMessage *msg,
                   fy__op_rpc_cb cb, void *ctx);

/* Sends a heartbeat to every broker the client talks to, now (loop). */
void fy__heartbeat_now(fy_client *cl);

/* =========================================================== connections */

/* loop: a request to addr ("host:port"). If the connection is open this is
 * fy_rpc_call; otherwise it is connected and the call sent once it is up
 * (its deadline still counting). cb runs exactly once if this returns 0;
 * conn is NULL when the call failed before reaching a connection. */
int fy__call(fy_client *cl, const char *addr, uint16_t code, const ProtobufCMessage *msg,
             const uv_buf_t *raw, unsigned nraw, uint32_t timeout_ms, fy_rpc_cb cb, void *arg);
/* loop: a one-way request; dropped (-ENOTCONN) unless the connection is
 * open or opening. */
int fy__oneway(fy_client *cl, const char *addr, uint16_t code, const ProtobufCMessage *msg);
/* loop: name-server call: tries cl->ns_cur, then each other name server in
 * turn after a network failure, within timeout_ms in all. cb once. */
int fy__ns_call(fy_client *cl, uint16_t code, const ProtobufCMessage *msg, uint32_t timeout_ms,
                fy_rpc_cb cb, void *arg);
/* loop: true while connecting to addr failed within the last
 * FY__DOWN_MS (refused, unreachable, timed out): address choices prefer
 * another broker of the same brokerName meanwhile, so a killed master is
 * avoided before the name servers drop it from the route. */
bool fy__addr_down(fy_client *cl, const char *addr);
/* loop: closes every connection (client shutdown). */
void fy__conns_close_all(fy_client *cl);
size_t fy__conns_count(const fy_client *cl);
int fy__cl_split_addr(const char *addr, char *host, size_t host_size, int *port);

/* ================================================================ routes */

struct fy__baddr {
  uint64_t id;
  char addr[FY_CLIENT_ADDR_MAX];
};

struct fy__bdata {
  char cluster[FY_CLIENT_NAME_MAX];
  char name[FY_CLIENT_NAME_MAX];
  size_t naddrs;
  struct fy__baddr *addrs; /* sorted by id */
};

struct fy__qdata {
  char broker_name[FY_CLIENT_NAME_MAX];
  uint32_t read_queues, write_queues, perm;
};

struct fy__mq {
  const char *broker_name; /* into the route */
  uint32_t queue_id;
};

/* A decoded route; immutable once built. */
struct fy__route {
  size_t nqd, nbd, npub, nsub;
  struct fy__qdata *qd;
  struct fy__bdata *bd;   /* sorted by name */
  struct fy__mq *pub;     /* writable queues of brokerNames with a master, sorted */
  struct fy__mq *sub;     /* readable queues, sorted */
};

#define FY__PERM_READ 4u
#define FY__PERM_WRITE 2u

/* Builds a route from its protobuf form. NULL on ENOMEM. */
struct fy__route *fy__route_from_pb(const Ferry__V1__TopicRoute *pb);
void fy__route_free(struct fy__route *r);
const struct fy__bdata *fy__route_broker(const struct fy__route *r, const char *broker_name);
/* Address of broker id in b, or NULL. */
const char *fy__bdata_addr(const struct fy__bdata *b, uint64_t id);
/* findBrokerAddressInSubscribe as Ferry does it: id, then the master,
 * then the lowest id; with cl, an address that is down (fy__addr_down) is
 * passed over for the next choice when there is one. Sets *used_id. NULL
 * if the brokerName has no address. */
const char *fy__route_sub_addr(fy_client *cl, const struct fy__route *r, const char *broker_name,
                               uint64_t id, uint64_t *used_id);
/* Master, else the lowest id (offset commits, admin reads); same rule. */
const char *fy__route_admin_addr(fy_client *cl, const struct fy__route *r,
                                 const char *broker_name, uint64_t *used_id);
/* Master only (sends). */
const char *fy__route_master_addr(const struct fy__route *r, const char *broker_name);

struct fy__rentry {
  char topic[FY_CLIENT_TOPIC_MAX];
  struct fy__route *route;        /* NULL until fetched */
  int last_err;                   /* of the last fetch */
  char errtext[512];              /* its detail */
  uint64_t fetched_ms, used_ms, producer_used_ms;
  uint64_t absent_ms;             /* when the name servers last said "no such topic" */
  uint32_t pins;                  /* push consumers subscribed */
  uint32_t rr;                    /* producers' round-robin position */
  bool fetching;
  struct fy__rwait *waiters;      /* FIFO of ops waiting for this fetch */
  struct fy__rwait **waiters_tail;
  size_t nwaiters;
};

/* loop: calls cb(op, err, entry) once the topic's route is known: at once
 * (synchronously) if cached and !fresh, else after a fetch (fresh: always
 * fetch). err is 0 or the fetch's error (-FY_ETOPIC_NOT_EXIST ...); entry
 * is valid during cb. cb is skipped if op completed meanwhile. Returns 0
 * or an error (cb will not run). */
typedef void (*fy__route_cb)(struct fy__op *op, int err, struct fy__rentry *e);
int fy__route_get(struct fy__op *op, const char *topic, bool fresh, fy__route_cb cb);
/* loop: the entry for topic, created if absent (NULL when the cache is full). */
struct fy__rentry *fy__route_entry(fy_client *cl, const char *topic);
/* loop: starts a background fetch unless one is running. */
void fy__route_refresh(fy_client *cl, struct fy__rentry *e);
/* loop: periodic refresh (timer) and teardown. */
void fy__routes_start(fy_client *cl);
void fy__routes_close(fy_client *cl);
/* After the loop has stopped: frees the cache. */
void fy__routes_free(fy_client *cl);

/* ================================================================ results */

/* Arena: chunks freed together; a result's hidden header owns one. */
struct fy__chunk;
struct fy__arena {
  struct fy__chunk *chunks;
  char *cur;
  size_t left;
};
void *fy__cl_arena_alloc(struct fy__arena *a, size_t n); /* 16-aligned; NULL on ENOMEM */
char *fy__cl_arena_strndup(struct fy__arena *a, const char *s, size_t n);
char *fy__cl_arena_strdup(struct fy__arena *a, const char *s);
/* A result of size bytes (zeroed) whose first chunk has room for extra
 * more; *arena allocates what hangs off it. Freed by fy_result_free. */
void *fy__result_new(size_t size, size_t extra, struct fy__arena **arena);

/* Decodes one received record (the bytes of one stored record) into view,
 * allocating its strings in a. Returns 0 or -ENOMEM. */
int fy__msg_view_build(const struct fy_msg *m, const char *broker_name, uint64_t broker_id,
                       struct fy__arena *a, fy_message_view *view);
/* Walks count records back to back in raw (len bytes), checking each
 * (validity rule of docs/STORE.md, at its own phys_offset). Calls fn for
 * each; stops at the first bad one. Returns the number decoded, or
 * -FY_ECORRUPT if the section is not count valid records exactly. */
typedef int (*fy__record_fn)(const struct fy_msg *m, void *arg);
int fy__records_walk(const uint8_t *raw, size_t len, uint32_t count, fy__record_fn fn, void *arg);

/* Builds a message list result from count records. */
int fy__msg_list_build(const uint8_t *raw, size_t len, uint32_t count, const char *broker_name,
                       uint64_t broker_id, fy_message_list **out);

/* A subscription expression, parsed. */
struct fy__sub {
  char topic[FY_CLIENT_TOPIC_MAX];
  char expr[FY__EXPR_MAX];
  bool all;                        /* "*", empty or NULL */
  size_t ntags;
  char *tags[FY__TAGS_MAX];        /* into tagbuf */
  int64_t hashes[FY__TAGS_MAX];    /* fy_tag_hash of each, distinct */
  size_t nhashes;
  char tagbuf[FY__EXPR_MAX];
};
/* Parses "TagA || TagB" / "*" (RocketMQ's rules: split on "||", trim,
 * drop empty parts). -EINVAL if too long, too many tags, or only
 * separators. */
int fy__sub_parse(struct fy__sub *s, const char *topic, const char *expr);
/* The client's re-check: does a message with these tags match? */
bool fy__sub_match(const struct fy__sub *s, const char *tags);

/* UNIQ_KEY: 32 hex chars, IP(4) pid(2) random(4) ms-since-month-start(4)
 * counter(2), RocketMQ's MessageClientIDSetter layout. out >= 33 bytes. */
void fy__msgid_new(const fy_client *cl, char *out);
/* The same for a wall-clock time the caller read (ms). */
void fy__msgid_new_at(const fy_client *cl, int64_t now_ms, char *out);
/* offset msg id: hex of store ip(4|16) + port(4) + commit-log offset(8). */
void fy__offset_msgid(const struct fy_host *store, uint64_t phys, char *out, size_t size);
/* Decodes an offset msg id to "ip:port" and offset. -EINVAL if malformed. */
int fy__offset_msgid_decode(const char *id, char *addr, size_t addr_size, uint64_t *phys);

/* ========================================================= alloc (pure) */

/*
 * AllocateMessageQueueAveragely: with n queues and c consumers (both
 * sorted) and self at index i, returns the contiguous block of queue
 * indexes [*first, *first + *count). Consumers with i < n mod c get
 * floor(n/c)+1 queues, the others floor(n/c); when c > n, consumers i >= n
 * get none. RocketMQ's formula exactly.
 */
void fy__alloc_averagely(size_t n, size_t c, size_t i, size_t *first, size_t *count);

/* ============================================================ producers */

struct fy_producer {
  fy_client *cl;
  fy_producer_config cfg;
  char group[FY_CLIENT_GROUP_MAX];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint32_t inflight;               /* async sends not called back (mu) */
  uint32_t waiters;                /* senders waiting for inflight room (mu) */
  struct fy__cached_op *cache;     /* freed send ops kept for reuse (mu) */
  uint32_t cache_n;
  size_t cache_bytes;
  uint32_t live_ops;               /* send ops not yet freed (mu) */
  bool closing;                    /* mu */
  struct fy_producer *next;        /* cl->producers (loop) */
  struct fy_producer *all_next;    /* cl->all_producers (cl->mu) */
  bool registered;                 /* loop */
};

/* ============================================================ consumers */

struct fy_pull_consumer {
  fy_client *cl;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint32_t live_ops;                /* ops not yet freed (mu): close waits for 0 */
  char group[FY_CLIENT_GROUP_MAX];
  fy_strmap *suggest;               /* "topic\1broker\1qid" -> broker id + 1 (loop) */
  struct fy_pull_consumer *all_next;
};

/* A pull for a queue: fills the request for both consumers. */
void fy__pull_request_init(Ferry__V1__PullRequest *req, const char *group, const char *topic,
                           uint32_t queue_id, uint64_t offset, uint32_t max_msgs,
                           uint32_t max_bytes, uint32_t suspend_ms, const struct fy__sub *sub,
                           int64_t *hash_buf);
/* Protocol pull status -> fy_pull_status (FOUND for OK); -1 for errors. */
int fy__pull_status(uint16_t status);

/* Heartbeat content of the started push consumers (allocated in a), and
 * the broker addresses they need heartbeats on. Loop. */
size_t fy__push_heartbeat_data(fy_client *cl, struct fy__arena *a,
                               Ferry__V1__ConsumerData ***out);
void fy__push_heartbeat_addrs(fy_client *cl, fy_strmap *addrs);

#endif
