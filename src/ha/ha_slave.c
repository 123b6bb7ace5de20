/*
 * The slave side of the HA channel (protocol and states in ha.h): connects
 * to the master's HA port, says where its log ends, appends the bytes it is
 * sent through its own commit log (the store dispatches complete records),
 * and acknowledges what it holds. On any error it drops the connection and
 * reconnects, resuming from its own log end; a refusal for divergence stops
 * replication (FAILED) until an operator acts.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/log.h"
#include "ferry.pb-c.h"
#include "ha/ha.h"
#include "net/conn.h"
#include "net/rpc.h"

#define MOD "ha-slave"
#define TICK_MS 100

/* Wall-clock milliseconds, for "connected since" in status output. */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
#define RETRY_MS 1000

enum slave_state { S_IDLE, S_CONNECTING, S_HELLO_SENT, S_STREAMING, S_FAILED };
static const char *const state_names[] = {"IDLE", "CONNECTING", "HELLO_SENT", "STREAMING",
                                          "FAILED"};

struct fy_ha_slave {
  struct fy_ha_config cfg;
  uv_loop_t *loop;
  fy_store *store;
  fy_commitlog *cl;
  uint64_t broker_id;
  char broker_name[128];
  char master[128];
  fy_conn *conn;
  enum slave_state state;
  uint64_t last_read, last_ack, retry_at;
  int64_t connected_ms;
  uint64_t master_log_end;
  uint64_t acked_received, acked_durable;
  /* A chunk the log had no room for: kept, with the connection held
   * (fy_conn_hold), until an append completes and makes room, or, when the
   * disk is full (disk_full_paused), until the disk guard lets writes in
   * again; the tick retries and keeps acknowledging, so the master keeps
   * the link. */
  uint8_t *held;
  size_t held_len;
  uint64_t held_offset;
  uint64_t holds; /* times the input was held, for status */
  bool disk_full_paused;
  /* The copy of what the master held at the hello, reported once done. */
  bool catching_up;
  uint64_t catchup_from, catchup_to, catchup_start_ns;
  char last_error[256];
  uv_timer_t tick;
  bool stopping;
  void (*done)(void *);
  void *done_arg;
};

static void set_state(fy_ha_slave *s, enum slave_state st) { s->state = st; }

/* The held chunk goes with its connection: the next one resumes from the
 * log end. */
static void drop_held(fy_ha_slave *s) {
  free(s->held);
  s->held = NULL;
  s->held_len = 0;
  s->disk_full_paused = false;
}

static void fail_conn(fy_ha_slave *s, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_conn(fy_ha_slave *s, int reason, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->last_error, sizeof s->last_error, fmt, ap);
  va_end(ap);
  fy_warn(MOD, "master %s: %s; reconnecting", s->master, s->last_error);
  s->catching_up = false;
  drop_held(s);
  if (s->conn) {
    fy_conn_set_data(s->conn, NULL);
    fy_conn_close(s->conn, reason);
    s->conn = NULL;
  }
  if (s->state != S_FAILED)
    set_state(s, S_IDLE);
  s->retry_at = uv_now(s->loop) + RETRY_MS;
}

static void send_ack(fy_ha_slave *s) {
  if (s->state != S_STREAMING || !s->conn)
    return;
  Ferry__V1__HaAck a = FERRY__V1__HA_ACK__INIT;
  a.received = fy_commitlog_written(s->cl);
  a.durable = fy_commitlog_flushed(s->cl);
  if (a.durable > a.received)
    a.durable = a.received;
  if (fy_rpc_oneway(s->conn, FERRY__V1__OP__OP_HA_ACK, &a.base, NULL, 0) == 0) {
    s->acked_received = a.received;
    s->acked_durable = a.durable;
    s->last_ack = uv_now(s->loop);
  }
}

/* Logs, once per connection, when the slave holds what the master held
 * at the hello: operators see when a new or returning slave is in step. */
static void check_caught_up(fy_ha_slave *s) {
  if (!s->catching_up)
    return; /* every append of the stream comes here: keep it one branch */
  uint64_t written = fy_commitlog_written(s->cl);
  if (written < s->catchup_to)
    return;
  s->catching_up = false;
  double secs = (double)(uv_hrtime() - s->catchup_start_ns) / 1e9;
  uint64_t bytes = written - s->catchup_from;
  fy_info(MOD,
          "caught up with master %s: copied %" PRIu64 " bytes in %.3f s (%.1f MB/s); "
          "log end %" PRIu64,
          s->master, bytes, secs, secs > 0 ? (double)bytes / 1e6 / secs : 0.0, written);
}

static void on_appended(void *arg, int status, uint64_t phys, uint64_t size);

/* Appends the held chunk if the log has room now, and lets the connection
 * deliver again. */
static void retry_held(fy_ha_slave *s) {
  if (!s->held || !s->conn)
    return;
  int err = fy_commitlog_append_raw(s->cl, s->held_offset, s->held, s->held_len, on_appended, s);
  if (err == -FY_EBUSY || err == -FY_EDISK_FULL)
    return; /* the next completion or tick tries again */
  if (!err && s->disk_full_paused)
    fy_info(MOD, "disk accepts writes again: replication from master %s resumed at %" PRIu64,
            s->master, s->held_offset);
  drop_held(s);
  if (err) {
    fail_conn(s, err, "cannot append replicated bytes at %" PRIu64 ": %s", s->held_offset,
              fy_strerror(err));
    return;
  }
  s->last_read = uv_now(s->loop); /* the silence was ours */
  fy_conn_hold(s->conn, false);
}

static void on_appended(void *arg, int status, uint64_t phys, uint64_t size) {
  fy_ha_slave *s = arg;
  (void)phys;
  (void)size;
  if (status) {
    fy_error(MOD, "appending replicated bytes failed: %s", fy_strerror(status));
    return; /* the store is failed (sticky); the master will see no progress */
  }
  send_ack(s);
  check_caught_up(s);
  retry_held(s);
}

static void on_flushed(void *arg, uint64_t flushed) {
  fy_ha_slave *s = arg;
  if (flushed > s->acked_durable)
    send_ack(s);
}

static void on_data(fy_ha_slave *s, const fy_frame *f) {
  Ferry__V1__HaData *d;
  if (fy_frame_unpack(f, &ferry__v1__ha_data__descriptor, (ProtobufCMessage **)&d)) {
    fail_conn(s, -FY_EDECODE, "malformed data frame");
    return;
  }
  uint64_t offset = d->offset;
  s->master_log_end = d->master_log_end;
  fy_pb_free(&d->base);
  if (f->raw_len == 0) { /* heartbeat */
    if (uv_now(s->loop) - s->last_ack >= s->cfg.heartbeat_ms / 2)
      send_ack(s);
    return;
  }
  uint64_t end = fy_commitlog_end(s->cl);
  if (offset != end) {
    fail_conn(s, -EPROTO, "master sent offset %" PRIu64 " but the slave log ends at %" PRIu64,
              offset, end);
    return;
  }
  int err = fy_commitlog_append_raw(s->cl, offset, f->raw, f->raw_len, on_appended, s);
  if (err == -FY_EBUSY || err == -FY_EDISK_FULL) {
    /* The log's write buffers are full (the disk is slower than the link),
     * or the disk guard refuses writes: keep the chunk and stop reading
     * until it fits, so TCP slows the master down instead of the slave
     * dropping the link (and, on a full disk, redialling every second). */
    s->held = malloc(f->raw_len);
    if (!s->held) {
      fail_conn(s, -ENOMEM, "no memory to hold a chunk of %u bytes", (unsigned)f->raw_len);
      return;
    }
    memcpy(s->held, f->raw, f->raw_len);
    s->held_len = f->raw_len;
    s->held_offset = offset;
    s->holds++;
    fy_conn_hold(s->conn, true);
    if (err == -FY_EDISK_FULL) {
      s->disk_full_paused = true;
      snprintf(s->last_error, sizeof s->last_error,
               "disk full (diskSpaceWarningLevelRatio): replication paused at %" PRIu64, offset);
      fy_warn(MOD, "master %s: %s until the disk has room; a SYNC_MASTER's sends wait meanwhile",
              s->master, s->last_error);
    }
  } else if (err)
    fail_conn(s, err, "cannot append replicated bytes at %" PRIu64 ": %s", offset,
              fy_strerror(err));
}

static void on_frame(fy_conn *conn, const fy_frame *f) {
  fy_ha_slave *s = fy_conn_data(conn);
  if (!s)
    return;
  s->last_read = uv_now(s->loop);
  if (f->op == FERRY__V1__OP__OP_HA_DATA && s->state == S_STREAMING)
    on_data(s, f);
}

static void on_close(fy_conn *conn, int reason) {
  fy_ha_slave *s = fy_conn_data(conn);
  if (!s || s->conn != conn)
    return;
  s->conn = NULL;
  s->catching_up = false;
  drop_held(s);
  if (s->state != S_FAILED)
    set_state(s, S_IDLE);
  snprintf(s->last_error, sizeof s->last_error, "connection closed: %s", fy_net_strerror(reason));
  fy_warn(MOD, "lost the master %s: %s", s->master, fy_net_strerror(reason));
  s->retry_at = uv_now(s->loop) + RETRY_MS;
}

static void on_hello_answer(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  fy_ha_slave *s = arg;
  if (s->conn != conn)
    return;
  if (err) {
    fail_conn(s, err, "hello not answered: %s", fy_net_strerror(err));
    return;
  }
  if (resp->status != FERRY__V1__STATUS__OK) {
    char text[200];
    fy_frame_error_text(resp, text, sizeof text);
    snprintf(s->last_error, sizeof s->last_error, "refused by the master: %s", text);
    fy_error(MOD, "master %s refused replication: %s. Replication is stopped; see "
                  "docs/OPERATIONS.md (diverged or missing log)",
             s->master, text);
    set_state(s, S_FAILED);
    fy_conn_set_data(s->conn, NULL);
    fy_conn_close(s->conn, 0);
    s->conn = NULL;
    return;
  }
  Ferry__V1__HaHelloResponse *r;
  if (fy_frame_unpack(resp, &ferry__v1__ha_hello_response__descriptor, (ProtobufCMessage **)&r)) {
    fail_conn(s, -FY_EDECODE, "malformed hello answer");
    return;
  }
  s->master_log_end = r->master_log_end;
  fy_pb_free(&r->base);
  set_state(s, S_STREAMING);
  s->connected_ms = wall_ms();
  s->last_error[0] = '\0';
  uint64_t end = fy_commitlog_end(s->cl);
  fy_info(MOD, "replicating from master %s at offset %" PRIu64 " (master end %" PRIu64 ")",
          s->master, end, s->master_log_end);
  s->catching_up = s->master_log_end > end;
  s->catchup_from = end;
  s->catchup_to = s->master_log_end;
  s->catchup_start_ns = uv_hrtime();
  send_ack(s);
}

static void send_hello(fy_ha_slave *s) {
  Ferry__V1__HaHello h = FERRY__V1__HA_HELLO__INIT;
  uint64_t end = fy_commitlog_end(s->cl);
  h.broker_name = s->broker_name;
  h.broker_id = s->broker_id;
  h.log_end = end;
  if (end > 0) {
    uint64_t seg = fy_commitlog_segment_size(s->cl);
    uint64_t seg_start = (end - 1) / seg * seg;
    uint64_t len = end - seg_start < s->cfg.tail_check_bytes ? end - seg_start
                                                             : s->cfg.tail_check_bytes;
    struct fy_cl_slice sl;
    if (len && end - len >= fy_commitlog_min(s->cl) &&
        fy_commitlog_read(s->cl, end - len, len, &sl) == 0) {
      if (sl.len == len) {
        h.tail_crc = fy_crc32c(0, sl.data, sl.len);
        h.tail_len = (uint32_t)len;
      }
      fy_cl_slice_release(&sl);
    }
  }
  int err = fy_rpc_call(s->conn, FERRY__V1__OP__OP_HA_HELLO, &h.base, NULL, 0, s->cfg.timeout_ms,
                        on_hello_answer, s);
  if (err)
    fail_conn(s, err, "cannot send hello: %s", fy_net_strerror(err));
  else
    set_state(s, S_HELLO_SENT);
}

static void on_connected(fy_conn *conn, int status) {
  fy_ha_slave *s = fy_conn_data(conn);
  if (!s || s->conn != conn)
    return;
  if (status) {
    s->conn = NULL; /* closed right after this returns */
    fy_conn_set_data(conn, NULL);
    set_state(s, S_IDLE);
    snprintf(s->last_error, sizeof s->last_error, "cannot connect: %s", fy_net_strerror(status));
    s->retry_at = uv_now(s->loop) + RETRY_MS;
    return;
  }
  s->last_read = uv_now(s->loop);
  send_hello(s);
}

static void connect_master(fy_ha_slave *s) {
  char host[128];
  snprintf(host, sizeof host, "%s", s->master);
  char *colon = strrchr(host, ':');
  if (!colon)
    return;
  *colon = '\0';
  int port = atoi(colon + 1);
  fy_conn_cfg cc = {.on_frame = on_frame, .on_close = on_close, .data = s,
                    .connect_timeout_ms = s->cfg.timeout_ms};
  if (fy_conn_connect(s->loop, host, port, &cc, on_connected, &s->conn) == 0)
    set_state(s, S_CONNECTING);
  else
    s->retry_at = uv_now(s->loop) + RETRY_MS;
}

static void on_tick(uv_timer_t *t) {
  fy_ha_slave *s = t->data;
  uint64_t now = uv_now(s->loop);
  switch (s->state) {
  case S_IDLE:
    if (s->master[0] && now >= s->retry_at)
      connect_master(s);
    break;
  case S_HELLO_SENT:
  case S_STREAMING:
    if (s->held) {
      retry_held(s); /* completions retry too; this covers a lost wake-up and a full disk */
      if (s->held && s->state == S_STREAMING && now - s->last_ack >= s->cfg.heartbeat_ms)
        send_ack(s); /* still here: the master keeps the link while the chunk waits */
    } else if (now - s->last_read > s->cfg.timeout_ms)
      fail_conn(s, -ETIMEDOUT, "nothing heard for %" PRIu64 " ms (haHousekeepingInterval)",
                now - s->last_read);
    else if (s->state == S_STREAMING && now - s->last_ack >= s->cfg.heartbeat_ms)
      send_ack(s);
    break;
  case S_CONNECTING:
  case S_FAILED:
    break;
  }
}

int fy_ha_slave_start(uv_loop_t *loop, fy_store *store, const struct fy_ha_config *cfg,
                      uint64_t broker_id, const char *broker_name, const char *master_addr,
                      fy_ha_slave **out) {
  fy_ha_slave *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->cfg = *cfg;
  s->loop = loop;
  s->store = store;
  s->cl = fy_store_commitlog(store);
  s->broker_id = broker_id;
  snprintf(s->broker_name, sizeof s->broker_name, "%s", broker_name);
  snprintf(s->master, sizeof s->master, "%s", master_addr ? master_addr : "");
  fy_commitlog_on_flushed(s->cl, on_flushed, s);
  uv_timer_init(loop, &s->tick);
  s->tick.data = s;
  uv_timer_start(&s->tick, on_tick, 0, TICK_MS);
  *out = s;
  return 0;
}

void fy_ha_slave_set_master(fy_ha_slave *s, const char *master_addr) {
  if (!master_addr || !*master_addr || strcmp(master_addr, s->master) == 0)
    return;
  fy_info(MOD, "master HA address is now %s", master_addr);
  snprintf(s->master, sizeof s->master, "%s", master_addr);
  if (s->conn) {
    fy_conn_set_data(s->conn, NULL);
    fy_conn_close(s->conn, 0);
    s->conn = NULL;
  }
  if (s->state != S_FAILED)
    set_state(s, S_IDLE);
  s->retry_at = 0;
}

void fy_ha_slave_info(const fy_ha_slave *s, struct fy_ha_slave_info *out) {
  memset(out, 0, sizeof *out);
  out->state = state_names[s->state];
  snprintf(out->master, sizeof out->master, "%s", s->master);
  out->log_end = fy_commitlog_end(s->cl);
  out->master_log_end = s->master_log_end;
  out->connected_since_ms = s->state == S_STREAMING ? s->connected_ms : 0;
  out->holds = s->holds;
  out->disk_full_paused = s->disk_full_paused;
  snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
}

static void on_tick_closed(uv_handle_t *h) {
  fy_ha_slave *s = h->data;
  void (*done)(void *) = s->done;
  void *arg = s->done_arg;
  drop_held(s);
  free(s);
  done(arg);
}

void fy_ha_slave_stop(fy_ha_slave *s, void (*done)(void *arg), void *arg) {
  s->stopping = true;
  s->done = done;
  s->done_arg = arg;
  fy_commitlog_on_flushed(s->cl, NULL, NULL);
  if (s->conn) {
    fy_conn_set_data(s->conn, NULL);
    fy_conn_close(s->conn, 0);
    s->conn = NULL;
  }
  uv_close((uv_handle_t *)&s->tick, on_tick_closed);
}
