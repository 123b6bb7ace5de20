/*
 * The measuring core of the peer load clients: why it exists is in
 * peer_run.h. It knows nothing of any protocol, so the three clients count,
 * pace and report exactly alike (and like ferry-bench's RESULT line).
 */
#include "bench/peers/peer_run.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

uint64_t pr_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int parse_num(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

static bool is_flag(const char *const *flags, const char *name) {
  for (size_t i = 0; flags && flags[i] && i < 64; i++)
    if (strcmp(flags[i], name) == 0)
      return true;
  return false;
}

int pr_parse(int argc, char **argv, struct pr_opts *o, const char *const *flags,
             pr_extra_fn extra, void *arg, const char *usage) {
  *o = (struct pr_opts){.host = "127.0.0.1", .port = 0, .size = 128, .inflight = 1024,
                        .batch = 1, .duration_s = 10, .warmup_s = 1, .rate = 0};
  for (int i = 1; i < argc; i++) {
    const char *name = argv[i];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0)
      goto bad;
    if (is_flag(flags, name)) {
      if (!extra || extra(name, NULL, arg) != 0)
        goto bad;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "%s needs a value\n", name);
      goto bad;
    }
    const char *val = argv[++i];
    double v = 0;
    int rc = 0;
    if (strcmp(name, "--host") == 0)
      o->host = val;
    else if (strcmp(name, "--port") == 0)
      rc = parse_num(val, 1, 65535, &v), o->port = (int)v;
    else if (strcmp(name, "--size") == 0)
      rc = parse_num(val, 1, PR_SIZE_MAX, &v), o->size = (uint32_t)v;
    else if (strcmp(name, "--inflight") == 0)
      rc = parse_num(val, 1, PR_INFLIGHT_MAX, &v), o->inflight = (uint32_t)v;
    else if (strcmp(name, "--batch") == 0)
      rc = parse_num(val, 1, PR_INFLIGHT_MAX, &v), o->batch = (uint32_t)v;
    else if (strcmp(name, "--duration-s") == 0)
      rc = parse_num(val, 0.1, 86400, &o->duration_s);
    else if (strcmp(name, "--warmup-s") == 0)
      rc = parse_num(val, 0, 3600, &o->warmup_s);
    else if (strcmp(name, "--rate") == 0)
      rc = parse_num(val, 0, 1e8, &o->rate);
    else if (strcmp(name, "--tick-us") == 0)
      rc = parse_num(val, 0, 1e6, &v), o->tick_us = (uint32_t)v;
    else if (strcmp(name, "--series-ms") == 0)
      rc = parse_num(val, 0, 60000, &v), o->series_ms = (uint32_t)v;
    else if (!extra || extra(name, val, arg) != 0) {
      fprintf(stderr, "unknown option %s\n", name);
      goto bad;
    }
    if (rc) {
      fprintf(stderr, "bad value for %s: %s\n", name, val);
      goto bad;
    }
  }
  if (o->port == 0) {
    fprintf(stderr, "--port is required\n");
    goto bad;
  }
  return 0;
bad:
  fprintf(stderr, "%s", usage);
  return -1;
}

int pr_init(struct pr_run *r, const struct pr_opts *o) {
  memset(r, 0, sizeof *r);
  r->o = *o;
  r->t0_ns = calloc(o->inflight, sizeof *r->t0_ns);
  r->done = calloc(o->inflight, 1);
  if (!r->t0_ns || !r->done) {
    pr_free(r);
    return -ENOMEM;
  }
  fy_hist_init(&r->hist);
  fy_hist_init(&r->late);
  fy_hist_init(&r->win);
  return 0;
}

void pr_free(struct pr_run *r) {
  free(r->t0_ns);
  free(r->done);
  r->t0_ns = NULL;
  r->done = NULL;
}

void pr_start(struct pr_run *r) {
  r->start_ns = pr_now_ns();
  r->measure_ns = r->start_ns + (uint64_t)(r->o.warmup_s * 1e9);
  r->end_ns = r->measure_ns + (uint64_t)(r->o.duration_s * 1e9);
  r->drain_ns = r->end_ns + (uint64_t)(PR_DRAIN_S * 1e9);
  r->win_end_ns = r->measure_ns + (uint64_t)r->o.series_ms * 1000000u;
}

/* Prints the --series-ms windows that ended by now_ns (empty ones too). */
static void series_roll(struct pr_run *r, uint64_t now_ns) {
  while (r->o.series_ms && now_ns >= r->win_end_ns && r->win_end_ns <= r->end_ns) {
    fprintf(stderr, "SERIES mono_ms=%" PRIu64 " n=%" PRIu64 " p50_us=%" PRIu64 " p99_us=%" PRIu64
            " max_us=%" PRIu64 " late_max_us=%" PRIu64 "\n", r->win_end_ns / 1000000u,
            r->win.count, fy_hist_percentile(&r->win, 50), fy_hist_percentile(&r->win, 99),
            r->win.count ? r->win.max : 0, r->win_late_max_us);
    fy_hist_init(&r->win);
    r->win_late_max_us = 0;
    r->win_end_ns += (uint64_t)r->o.series_ms * 1000000u;
  }
}

static uint64_t intended_ns(const struct pr_run *r, uint64_t k) {
  return r->start_ns + (uint64_t)((double)k * 1e9 / r->o.rate);
}

int64_t pr_can_send(struct pr_run *r, uint64_t now_ns) {
  if (now_ns >= r->end_ns)
    return -1;
  if (r->sent - r->acked >= r->o.inflight)
    return -1;
  if (r->sent >= r->o.inflight && !r->done[r->sent % r->o.inflight])
    return -1; /* the slot's previous message is still out */
  if (r->o.rate > 0) {
    uint64_t due = intended_ns(r, r->sent);
    if (due > now_ns)
      return (int64_t)(due - now_ns);
  }
  return 0;
}

uint64_t pr_sent(struct pr_run *r, uint64_t now_ns) {
  uint64_t k = r->sent++;
  uint64_t t0 = r->o.rate > 0 ? intended_ns(r, k) : now_ns;
  r->t0_ns[k % r->o.inflight] = t0;
  if (r->o.rate > 0 && now_ns >= r->measure_ns && now_ns <= r->end_ns) {
    uint64_t late_us = now_ns > t0 ? (now_ns - t0) / 1000 : 0;
    series_roll(r, now_ns);
    fy_hist_record(&r->late, late_us);
    if (late_us > r->win_late_max_us)
      r->win_late_max_us = late_us;
  }
  r->done[k % r->o.inflight] = 0;
  return k;
}

void pr_acked(struct pr_run *r, uint64_t k, bool ok, uint64_t now_ns) {
  if (k >= r->sent || k + r->o.inflight < r->sent || r->done[k % r->o.inflight])
    return; /* not outstanding: a duplicate or a stray reply */
  r->done[k % r->o.inflight] = 1;
  r->acked++;
  if (!ok) {
    r->errors++;
    return;
  }
  if (now_ns < r->measure_ns || now_ns > r->end_ns)
    return;
  uint64_t t0 = r->t0_ns[k % r->o.inflight];
  uint64_t us = now_ns > t0 ? (now_ns - t0) / 1000 : 0;
  series_roll(r, now_ns);
  fy_hist_record(&r->hist, us);
  if (r->o.series_ms)
    fy_hist_record(&r->win, us);
  if (!r->measured)
    r->first_measured_ns = now_ns;
  r->last_measured_ns = now_ns;
  r->measured++;
}

bool pr_finished(const struct pr_run *r, uint64_t now_ns) {
  if (now_ns >= r->drain_ns)
    return true;
  return now_ns >= r->end_ns && r->acked == r->sent;
}

int pr_poll_ms(struct pr_run *r, uint64_t now_ns) {
  int64_t wait = pr_can_send(r, now_ns);
  uint64_t ms = 100;
  if (wait >= 0)
    ms = (uint64_t)wait / 1000000u;
  if (now_ns < r->end_ns && (r->end_ns - now_ns) / 1000000u < ms)
    ms = (r->end_ns - now_ns) / 1000000u;
  return (int)ms;
}

int pr_report(struct pr_run *r, const char *system) {
  series_roll(r, r->end_ns); /* the windows no message came after */
  double secs = r->o.duration_s;
  double rate = secs > 0 ? (double)r->measured / secs : 0;
  uint64_t lost = r->sent - r->acked;
  fprintf(stderr,
          "%s: sent %" PRIu64 ", acknowledged %" PRIu64 " (%" PRIu64 " negative), %" PRIu64
          " unacknowledged at exit; %.0f msgs/s measured over %.1f s\n",
          system, r->sent, r->acked, r->errors, lost, rate, secs);
  if (r->o.rate > 0)
    printf("SENDER mode=produce late_p50_us=%" PRIu64 " late_p99_us=%" PRIu64
           " late_p999_us=%" PRIu64 "\n",
           fy_hist_percentile(&r->late, 50), fy_hist_percentile(&r->late, 99),
           fy_hist_percentile(&r->late, 99.9));
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  printf("CPU mode=produce cpu_s=%.3f cpu_s_per_1m=%.3f\n", cpu_s,
         r->acked ? cpu_s * 1e6 / (double)r->acked : 0);
  printf("RESULT mode=produce msgs=%" PRIu64 " errors=%" PRIu64 " secs=%.3f msgs_per_s=%.1f "
         "mb_per_s=%.3f p50_us=%" PRIu64 " p99_us=%" PRIu64 " p999_us=%" PRIu64
         " max_us=%" PRIu64 "\n",
         r->measured, r->errors + lost, secs, rate, rate * r->o.size / 1e6,
         fy_hist_percentile(&r->hist, 50), fy_hist_percentile(&r->hist, 99),
         fy_hist_percentile(&r->hist, 99.9), r->hist.count ? r->hist.max : 0);
  fflush(stdout);
  return r->measured > 0 && r->errors == 0 && lost == 0 ? 0 : 1;
}

void pr_body(char *buf, uint32_t size, uint64_t k) {
  static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  for (uint32_t i = 0; i < size; i++)
    buf[i] = digits[(k + i * 7) % 36];
}
