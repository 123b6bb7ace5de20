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
#include "common/strmap.h"
#include "ferry.pb-c.h"
#include "ha/ha.h"
#include "net/conn.h"
#include "net/rpc.h"
#include "store/store.h"

#define FY_NAMESRV_MAX 8
#define FY_PULL_TAGS_MAX 32

struct pending_send;
struct held_pull;

/* Per-connection state (fy_conn_data). Requests whose answer comes later
 * (sends waiting for the disk, held pulls) are listed here so that a closing
 * connection can orphan or drop them. */
struct bconn {
  struct fy_broker *b;
  fy_conn *conn;
  struct pending_send *sends;
  struct held_pull *held;
};

struct ns_link {
  struct fy_broker *b;
  char host[64];
  int port;
  fy_conn *conn;
};

/* A pull request, decoded into Ferry's own fields. */
struct pull_req {
  uint64_t request_id;
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

  /* HA: a master runs ha_master, a slave ha_slave and the metadata sync */
  struct fy_ha_config ha_cfg;
  fy_ha_master *ha_master;
  fy_ha_slave *ha_slave;
  char master_addr[80];      /* the master's client address, from the name server */
  fy_conn *master_conn;      /* slave -> master, for metadata */
  bool meta_inflight;
  uv_timer_t meta_timer;

  /* round-robin queue choice for sends without a queue id */
  uint32_t rr;
  uint32_t uniq_counter;

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
  uint64_t pulls, pulled_msgs, pulls_held;
};

/* broker.c (fy__now_ms comes from persist.h) */
void fy__broker_register_all(struct fy_broker *b);
bool fy__broker_refuse_if_stopping(struct fy_broker *b, fy_conn *conn, const fy_frame *f);
void fy__reply_decode_error(fy_conn *conn, const fy_frame *f);

/* send.c */
void fy__handle_send(struct fy_broker *b, struct bconn *bc, const fy_frame *f);
void fy__sends_conn_closed(struct bconn *bc);
void fy__offset_msg_id(const struct fy_broker *b, uint64_t phys, char out[33]);

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

/* admin.c: consumer, offset, topic, query and status requests */
void fy__handle_admin(struct fy_broker *b, struct bconn *bc, const fy_frame *f);

#endif
