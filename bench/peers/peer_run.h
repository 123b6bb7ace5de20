/*
 * What the peer load clients (redis_bench, nats_bench, rabbit_bench) share
 * with each other and with ferry-bench: the options (--size, --inflight,
 * --batch, --duration-s, --warmup-s, --rate), the window of messages in
 * flight, open-loop pacing and the RESULT line.
 *
 * A run sends messages numbered 0, 1, 2, ... Message k may be sent when
 * fewer than --inflight messages are unacknowledged and, with --rate R > 0,
 * once its intended send time start + k / R has come (open loop). Its
 * latency is measured from that intended time (from the actual send time in
 * a closed loop), so a client that falls behind its schedule shows the
 * waiting in its percentiles instead of hiding it (no coordinated
 * omission). With --tick-us T the client queues what is due at most once
 * every T microseconds, in one burst, and sleeps in between, as
 * ferry-bench's sender does with the same option (ps_run); without it the
 * client polls in whole milliseconds and spins when a send is due sooner. Messages acknowledged between the end of the warm-up and the
 * end of the run are counted and their latencies recorded; after the run no
 * new message is sent and the client waits at most PR_DRAIN_S for the
 * outstanding ones. With --series-ms W, each W ms of the measured interval
 * also prints a line on stderr, "SERIES mono_ms=T n=N p50_us= p99_us=
 * max_us= late_max_us=", T being CLOCK_MONOTONIC at the window's end:
 * lined up with a server's own monotonic timestamps it shows which event
 * made a slow window; late_max_us says whether this client was the one late
 * (the most a message sent in the window was behind its intended time).
 * Single-threaded; no allocation after pr_init.
 */
#ifndef FY_BENCH_PEER_RUN_H
#define FY_BENCH_PEER_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "common/hist.h"

#define PR_SIZE_MAX (1024u * 1024)
#define PR_INFLIGHT_MAX 65536u
#define PR_DRAIN_S 10.0

struct pr_opts {
  const char *host;
  int port;
  uint32_t size;       /* message body bytes */
  uint32_t inflight;   /* messages sent and not yet acknowledged, at most */
  uint32_t batch;      /* client-specific grouping (see each client's usage) */
  double duration_s;   /* measured interval, after the warm-up */
  double warmup_s;
  double rate;         /* messages/s for open loop; 0 = closed loop */
  uint32_t tick_us;    /* queue sends at most once per tick_us (0: whenever due) */
  uint32_t series_ms;  /* print a SERIES line per this many ms measured (0: none) */
};

/* An option the generic parser does not know: return 0 if taken (with its
 * value val, which may be NULL for a flag listed in flags), -1 if unknown. */
typedef int (*pr_extra_fn)(const char *name, const char *val, void *arg);

/*
 * Parses argv into o (defaults: host 127.0.0.1, size 128, inflight 1024,
 * batch 1, duration 10 s, warm-up 1 s, rate 0, tick 0). flags is a NULL-terminated
 * list of option names that take no value (may be NULL). Prints usage to
 * stderr and returns -1 on a bad option.
 */
int pr_parse(int argc, char **argv, struct pr_opts *o, const char *const *flags,
             pr_extra_fn extra, void *arg, const char *usage);

struct pr_run {
  struct pr_opts o;
  uint64_t start_ns, measure_ns, end_ns, drain_ns;
  uint64_t sent;      /* messages handed to the socket so far */
  uint64_t acked;     /* messages acknowledged (ok or not), in any order */
  uint64_t measured;  /* acknowledged ok inside the measured interval */
  uint64_t errors;    /* negative acknowledgements (any time) */
  uint64_t first_measured_ns, last_measured_ns;
  uint64_t *t0_ns;    /* intended send time of message k at [k % inflight] */
  uint8_t *done;      /* 1 once message k's acknowledgement was counted */
  struct fy_hist hist;
  struct fy_hist late; /* open loop: how late measured messages were sent */
  struct fy_hist win;  /* the current --series-ms window */
  uint64_t win_late_max_us; /* the latest send in the current window */
  uint64_t win_end_ns;
};

uint64_t pr_now_ns(void);
int pr_init(struct pr_run *r, const struct pr_opts *o);
void pr_free(struct pr_run *r);
/* Starts the clock: the warm-up begins now. */
void pr_start(struct pr_run *r);
/*
 * Whether message r->sent may be sent now: 0 if so; otherwise how many ns
 * until it may (open loop, ahead of schedule), or -1 if the window is full
 * or the run has ended (wait for acknowledgements).
 */
int64_t pr_can_send(struct pr_run *r, uint64_t now_ns);
/* Message r->sent was written to the socket; returns its number. */
uint64_t pr_sent(struct pr_run *r, uint64_t now_ns);
/* Message k was acknowledged (ok false: a negative acknowledgement).
 * Counts each message once; k must be < r->sent. */
void pr_acked(struct pr_run *r, uint64_t k, bool ok, uint64_t now_ns);
/* True when the run is over: past its end with nothing outstanding, or
 * past the drain deadline. */
bool pr_finished(const struct pr_run *r, uint64_t now_ns);
/* How long poll() may sleep now, in ms (at least 0, at most 100). */
int pr_poll_ms(struct pr_run *r, uint64_t now_ns);
/* Prints, in an open loop, a SENDER line (how late the measured messages
 * were sent: late_p50_us, late_p99_us, late_p999_us, as ferry-bench's), a
 * CPU line (this process's user + system seconds, as ferry-bench
 * does), then the RESULT line, and a human summary on stderr; returns 0 if at
 * least one message was measured and none failed or was left unacknowledged. */
int pr_report(struct pr_run *r, const char *system);

/* Fills buf with size printable bytes that differ per message number k. */
void pr_body(char *buf, uint32_t size, uint64_t k);

#endif
