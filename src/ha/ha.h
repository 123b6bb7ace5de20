/*
 * Master/slave replication of the commit log (the HA channel).
 *
 * The channel is a TCP connection from slave to master on the master's
 * haListenPort, carrying Ferry frames (proto/ferry.proto, OP_HA_*):
 *
 *   slave                                   master
 *     HA_HELLO {log_end, tail_crc} ------->   checks continuity (see below)
 *           <------- response {master min, end}  or an error, then close
 *           <------- HA_DATA {offset} + bytes    bounded chunks, never
 *                                               crossing a segment, straight
 *                                               from the mapped segments
 *     HA_ACK {received, durable} -------->   after each append completes,
 *                                               on each flush, and as a
 *                                               heartbeat
 *           <------- HA_DATA {} (no bytes)       heartbeat when idle
 *
 * Continuity is checked at both ends: the master refuses a slave whose log
 * is longer than its own or whose last bytes differ from the master's at the
 * same offsets (a diverged log), and an acknowledgement beyond its own log
 * end; the slave refuses data that does not start at its own log end.
 * Either side drops the connection when it has read nothing for
 * timeout_ms; the slave reconnects and resumes from its own log end.
 *
 * Session states (master side): HELLO_WAIT -> STREAMING -> closed.
 * Slave states: IDLE -> CONNECTING -> HELLO_SENT -> STREAMING -> IDLE
 * (retry after retry_ms), or FAILED (diverged: replication stops until an
 * operator acts).
 */
#ifndef FY_HA_HA_H
#define FY_HA_HA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/store.h"

struct fy_ha_config {
  uint32_t heartbeat_ms;      /* haSendHeartbeatInterval: 1000 */
  uint32_t timeout_ms;        /* haHousekeepingInterval: 5000 */
  uint32_t chunk_bytes;       /* haTransferBatchSize: 262144 */
  uint32_t inflight_bytes;    /* Ferry: bytes queued per slave connection: 4 MiB */
  uint64_t fallbehind_max;    /* haSlaveFallbehindMax: 268435456 */
  bool ack_on_durable;        /* haSyncAckOn: received (false) or durable (true) */
  uint32_t max_waiters;       /* sends waiting for a slave: 65536 */
  uint32_t tail_check_bytes;  /* Ferry: bytes compared at hello: 4096 */
};

void fy_ha_config_defaults(struct fy_ha_config *c);

/* ---------------------------------------------------------------- master */

typedef struct fy_ha_master fy_ha_master;

struct fy_ha_slave_status {
  char peer[64];
  uint64_t broker_id;
  int64_t connected_since_ms;
  uint64_t received, durable;
  uint64_t lag_bytes;
  int64_t lag_ms;            /* age of the oldest unacknowledged byte, 0 when caught up */
};

/* Listens for slaves on host:port. Returns 0 or an error (port in use...). */
int fy_ha_master_start(uv_loop_t *loop, fy_store *store, const struct fy_ha_config *cfg,
                       const char *host, int port, fy_ha_master **out);
int fy_ha_master_port(const fy_ha_master *m);

/* The offset acknowledged by the best slave (received or durable per
 * ack_on_durable); 0 without slaves. */
uint64_t fy_ha_master_acked(const fy_ha_master *m);

/* Whether a slave is connected and less than fallbehind_max behind end. */
bool fy_ha_master_slave_ok(const fy_ha_master *m, uint64_t end);

/*
 * Waits until a slave acknowledges `end`: cb(arg, 0) then, or
 * cb(arg, -FY_ETIMEOUT) after timeout_ms, or cb(arg, -FY_ECLOSED) when the
 * master stops. Waiters must be added in increasing `end` order (sends
 * complete in log order). Returns 0; 1 when `end` is already acknowledged;
 * -FY_EBUSY when max_waiters wait, -FY_ECLOSED when stopping (cb never runs
 * unless 0 is returned).
 */
int fy_ha_master_wait(fy_ha_master *m, uint64_t end, uint32_t timeout_ms,
                      void (*cb)(void *arg, int status), void *arg);

/* Called whenever the acknowledged offset advances. */
void fy_ha_master_on_ack(fy_ha_master *m, void (*cb)(void *arg, uint64_t acked), void *arg);

/* Status of up to cap slaves; returns how many. */
size_t fy_ha_master_status(const fy_ha_master *m, struct fy_ha_slave_status *out, size_t cap);

/* Stops: closes slave connections, fails waiters with -FY_ECLOSED, then
 * calls done(arg); freed after. */
void fy_ha_master_stop(fy_ha_master *m, void (*done)(void *arg), void *arg);

/* ---------------------------------------------------------------- slave */

typedef struct fy_ha_slave fy_ha_slave;

struct fy_ha_slave_info {
  const char *state;        /* "IDLE", "CONNECTING", "HELLO_SENT", "STREAMING", "FAILED" */
  char master[128];
  uint64_t log_end;
  uint64_t master_log_end;  /* as last reported by the master */
  int64_t connected_since_ms;
  uint64_t holds;           /* times reading stopped for the log's write buffers or disk */
  bool disk_full_paused;    /* the disk guard refuses writes: replication waits for room */
  char last_error[256];
};

/* Starts replicating into store from the master's HA address host:port
 * (empty: wait for fy_ha_slave_set_master). */
int fy_ha_slave_start(uv_loop_t *loop, fy_store *store, const struct fy_ha_config *cfg,
                      uint64_t broker_id, const char *broker_name, const char *master_addr,
                      fy_ha_slave **out);

/* Points the slave at a (new) master HA address; reconnects if it changed. */
void fy_ha_slave_set_master(fy_ha_slave *s, const char *master_addr);

void fy_ha_slave_info(const fy_ha_slave *s, struct fy_ha_slave_info *out);

void fy_ha_slave_stop(fy_ha_slave *s, void (*done)(void *arg), void *arg);

#endif
