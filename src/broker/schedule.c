/*
 * Delayed messages: RocketMQ's delay levels (messageDelayLevel).
 *
 * A send whose DELAY property names level N (1-based) is stored in
 * SCHEDULE_TOPIC_XXXX queue N-1 with its real topic and queue in the
 * REAL_TOPIC / REAL_QID properties. The master walks each level's queue in
 * order: an entry is due once level N's delay has passed since it was
 * stored; due entries are stored again under their real topic (DELAY,
 * REAL_TOPIC and REAL_QID removed) and the level's cursor moves past them
 * once those puts completed. The cursor is kept in the consumer-offset table
 * under the group %SCHEDULE%, so it is persisted with the other offsets and
 * follows the master to its slaves (larger wins).
 *
 * Delivery is at least once: a crash between a re-put and the cursor's next
 * save delivers those messages again. Only a master delivers; a slave keeps
 * the entries until its master (or a restarted one) does.
 *
 * One timer serves every level, armed for the earliest due entry; a level
 * whose queue is empty waits for the store's arrival callback instead.
 * Per pass a level re-puts at most BATCH_MAX entries.
 */
#include "broker/broker_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

#define MOD "schedule"
#define BATCH_MAX 32
#define RETRY_AFTER_ERROR_MS 1000
#define SCHED_GROUP "%SCHEDULE%"

enum { DUE_IDLE = 0 }; /* due_ms of a level with nothing stored: wait for arrival */

struct level {
  uint64_t delay_ms;
  uint64_t cursor;    /* next queue offset to deliver */
  bool loaded;        /* cursor read from the offset table */
  uint64_t due_ms;    /* when the next entry is due; DUE_IDLE when the queue is empty */
  unsigned inflight;  /* re-puts not yet completed */
  uint64_t advance_to; /* cursor once they have */
  bool failed;        /* one of them failed: keep the cursor, try again later */
  bool refused;       /* the store refused the next put (busy): what was queued before it
                         still moves the cursor; the rest is tried again later */
};

struct fy__sched {
  struct fy_broker *b;
  uv_timer_t timer;
  bool closing;
  size_t n;
  struct level lv[FY_DELAY_LEVELS_MAX];
  uint64_t delivered, dropped;
};

struct put_ctx {
  struct fy__sched *s;
  uint32_t level;
};

static void arm(struct fy__sched *s);
static void run_level(struct fy__sched *s, uint32_t l);

static uint64_t now_ms(void) { return (uint64_t)fy__now_ms(); }

/* Copies props without the keys the schedule adds or consumes. Returns the
 * new length. */
static size_t strip_props(const char *p, size_t len, char *out) {
  size_t o = 0, i = 0;
  while (i < len) {
    const char *end = memchr(p + i, '\x02', len - i);
    size_t n = end ? (size_t)(end - p) - i + 1 : len - i;
    const char *sep = memchr(p + i, '\x01', n);
    size_t klen = sep ? (size_t)(sep - (p + i)) : n;
    bool drop = (klen == 5 && memcmp(p + i, FY_PROP_DELAY, 5) == 0) ||
                (klen == 10 && memcmp(p + i, FY_PROP_REAL_TOPIC, 10) == 0) ||
                (klen == 8 && memcmp(p + i, FY_PROP_REAL_QID, 8) == 0);
    if (!drop) {
      memcpy(out + o, p + i, n);
      o += n;
    }
    i += n;
  }
  return o;
}

/* ---------------------------------------------------------------- sending side */

int fy__schedule_set_level(char *props, size_t cap, size_t *len, int level) {
  char *tmp = malloc(*len ? *len : 1);
  if (!tmp)
    return -ENOMEM;
  memcpy(tmp, props, *len);
  *len = strip_props(tmp, *len, props); /* also drops REAL_*: set again when delayed */
  free(tmp);
  char lvl[16];
  snprintf(lvl, sizeof lvl, "%d", level);
  return fy_props_add(props, cap, len, FY_PROP_DELAY, lvl, strlen(lvl));
}

static int delay_level_of(const struct fy_msg *m) {
  const char *v;
  size_t vlen;
  if (!fy_props_get(m->props, m->props_len, FY_PROP_DELAY, &v, &vlen) || vlen == 0 || vlen > 9)
    return 0;
  int level = 0;
  for (size_t i = 0; i < vlen; i++) {
    if (v[i] < '0' || v[i] > '9')
      return 0;
    level = level * 10 + (v[i] - '0');
  }
  return level;
}

int fy__schedule_rewrite(struct fy_broker *b, struct fy_msg *msgs, size_t n, char **scratch,
                         const char **why) {
  *scratch = NULL;
  struct fy__sched *s = b->sched;
  for (size_t i = 0; i < n; i++) {
    struct fy_msg *m = &msgs[i];
    int level = delay_level_of(m);
    if (level <= 0 || (m->topic_len == sizeof FY_SCHEDULE_TOPIC - 1 &&
                       memcmp(m->topic, FY_SCHEDULE_TOPIC, m->topic_len) == 0))
      continue;
    if (n > 1) {
      *why = "delayed messages (DELAY property) cannot be sent in a batch";
      return -EINVAL;
    }
    if (!s || s->n == 0) {
      *why = "this broker has no delay levels";
      return -EINVAL;
    }
    if ((size_t)level > s->n)
      level = (int)s->n; /* RocketMQ: beyond the last level means the last level */
    char *p = malloc(FY_PROPS_MAX);
    if (!p) {
      *why = "out of memory";
      return -ENOMEM;
    }
    size_t len = strip_props(m->props, m->props_len, p);
    char qid[16], lvl[16];
    snprintf(qid, sizeof qid, "%u", m->queue_id);
    snprintf(lvl, sizeof lvl, "%d", level);
    if (fy_props_add(p, FY_PROPS_MAX, &len, FY_PROP_DELAY, lvl, strlen(lvl)) ||
        fy_props_add(p, FY_PROPS_MAX, &len, FY_PROP_REAL_TOPIC, m->topic, m->topic_len) ||
        fy_props_add(p, FY_PROPS_MAX, &len, FY_PROP_REAL_QID, qid, strlen(qid))) {
      free(p);
      *why = "properties too long to delay the message";
      return -EINVAL;
    }
    m->props = p;
    m->props_len = (uint16_t)len;
    m->topic = FY_SCHEDULE_TOPIC;
    m->topic_len = sizeof FY_SCHEDULE_TOPIC - 1;
    m->queue_id = (uint32_t)level - 1;
    *scratch = p;
  }
  return 0;
}

/* ---------------------------------------------------------------- delivery */

static void level_done(struct fy__sched *s, uint32_t l) {
  struct level *lv = &s->lv[l];
  if (!lv->failed && lv->advance_to != lv->cursor) {
    lv->cursor = lv->advance_to;
    fy_offsets_commit(s->b->offsets, SCHED_GROUP, FY_SCHEDULE_TOPIC, l, (int64_t)lv->cursor);
  }
  /* look again at once, or a little later after an error */
  lv->due_ms = lv->failed || lv->refused ? now_ms() + RETRY_AFTER_ERROR_MS : 1;
  lv->failed = lv->refused = false;
  if (!s->closing)
    arm(s);
}

static void on_put(void *arg, int status, uint64_t phys, uint64_t size) {
  (void)phys;
  (void)size;
  struct put_ctx *ctx = arg;
  struct fy__sched *s = ctx->s;
  uint32_t l = ctx->level;
  struct level *lv = &s->lv[l];
  free(ctx);
  if (status) {
    if (!lv->failed)
      fy_warn(MOD, "delay level %u: re-put failed (%s); retrying in %d ms", l + 1,
              fy_strerror(status), RETRY_AFTER_ERROR_MS);
    lv->failed = true;
  } else {
    s->delivered++;
  }
  if (--lv->inflight == 0 && !s->closing)
    level_done(s, l);
}

/* Stores a due entry under its real topic. Returns 1 when a put is in
 * flight, 0 when the entry was dropped (no real topic any more), or a
 * negative error (nothing stored; try later). */
static int deliver(struct fy__sched *s, uint32_t l, const struct fy_msg *d) {
  struct fy_broker *b = s->b;
  const char *v;
  size_t vlen;
  char topic[FY_TOPIC_NAME_MAX + 1];
  uint32_t qid = 0;
  struct fy_topic_config tc;
  if (!fy_props_get(d->props, d->props_len, FY_PROP_REAL_TOPIC, &v, &vlen) ||
      vlen >= sizeof topic) {
    s->dropped++;
    fy_warn(MOD, "delay level %u: entry at commit-log offset %" PRIu64 " has no REAL_TOPIC; dropped",
            l + 1, d->phys_offset);
    return 0;
  }
  memcpy(topic, v, vlen);
  topic[vlen] = '\0';
  if (fy_props_get(d->props, d->props_len, FY_PROP_REAL_QID, &v, &vlen))
    for (size_t i = 0; i < vlen && v[i] >= '0' && v[i] <= '9'; i++)
      qid = qid * 10 + (uint32_t)(v[i] - '0');
  if (fy_topics_get(b->topics, topic, &tc) != 0) {
    s->dropped++;
    fy_warn(MOD, "delayed message for topic %s, which no longer exists here; dropped", topic);
    return 0;
  }
  if (qid >= tc.write_queues)
    qid %= tc.write_queues;
  char *props = malloc(FY_PROPS_MAX);
  struct put_ctx *ctx = malloc(sizeof *ctx);
  if (!props || !ctx) {
    free(props);
    free(ctx);
    return -ENOMEM;
  }
  struct fy_msg m = *d;
  m.topic = topic;
  m.topic_len = (uint16_t)strlen(topic);
  m.queue_id = qid;
  m.props = props;
  m.props_len = (uint16_t)strip_props(d->props, d->props_len, props);
  fy__store_host(b, &m.store_host);
  ctx->s = s;
  ctx->level = l;
  int err = fy_store_put(b->store, &m, 1, on_put, ctx);
  free(props); /* the store has encoded the record */
  if (err) {
    free(ctx);
    return err;
  }
  return 1;
}

static void run_level(struct fy__sched *s, uint32_t l) {
  struct fy_broker *b = s->b;
  struct level *lv = &s->lv[l];
  if (lv->inflight || s->closing)
    return;
  if (!lv->loaded) {
    int64_t off = fy_offsets_query(b->offsets, SCHED_GROUP, FY_SCHEDULE_TOPIC, l);
    lv->cursor = off > 0 ? (uint64_t)off : 0;
    lv->loaded = true;
  }
  struct fy_get_msg msgs[BATCH_MAX];
  struct fy_get_result res;
  /* max_bytes bounds a batch (0 would mean one message per pass) */
  fy_store_get(b->store, FY_SCHEDULE_TOPIC, l, lv->cursor, BATCH_MAX, b->cfg->pull_max_bytes, NULL,
               0, msgs, &res);
  switch (res.status) {
  case FY_GET_NO_NEW:
  case FY_GET_NO_QUEUE:
    lv->due_ms = DUE_IDLE;
    return;
  case FY_GET_FOUND:
    break;
  default: /* moved by retention, or past the end after a truncation */
    lv->cursor = res.next_offset;
    lv->due_ms = 1;
    return;
  }
  uint64_t now = now_ms();
  lv->due_ms = 1; /* everything fetched was due: look again right after */
  lv->advance_to = lv->cursor;
  size_t i = 0;
  for (; i < res.count; i++) {
    struct fy_msg d;
    enum fy_record_kind kind;
    if (fy_record_decode(msgs[i].slice.data, msgs[i].slice.len, msgs[i].slice.offset, &kind, &d) <= 0)
      break; /* cannot happen for a pinned, validated record; stop rather than skip */
    uint64_t due = (uint64_t)d.store_ts_ms + lv->delay_ms;
    if (due > now) {
      lv->due_ms = due;
      break;
    }
    int rc = deliver(s, l, &d);
    if (rc < 0) {
      lv->refused = true; /* nothing of it stored; the puts before it stand */
      break;
    }
    lv->inflight += (unsigned)rc;
    lv->advance_to = msgs[i].queue_offset + 1;
  }
  fy_store_get_release(msgs, res.count);
  if (lv->inflight == 0 && (lv->advance_to != lv->cursor || lv->refused))
    level_done(s, l); /* only drops, or a put refused at once */
}

static void on_timer(uv_timer_t *t) {
  struct fy__sched *s = t->data;
  if (s->closing || s->b->stopping || s->b->cfg->role == FY_ROLE_SLAVE)
    return;
  uint64_t now = now_ms();
  for (uint32_t l = 0; l < s->n; l++)
    if (s->lv[l].due_ms != DUE_IDLE && s->lv[l].due_ms <= now)
      run_level(s, l);
  arm(s);
}

/* Arms the timer for the earliest due level (none: it stays stopped). */
static void arm(struct fy__sched *s) {
  uint64_t next = UINT64_MAX;
  for (uint32_t l = 0; l < s->n; l++)
    if (s->lv[l].due_ms != DUE_IDLE && !s->lv[l].inflight && s->lv[l].due_ms < next)
      next = s->lv[l].due_ms;
  if (next == UINT64_MAX) {
    uv_timer_stop(&s->timer);
    return;
  }
  uint64_t now = now_ms();
  uv_timer_start(&s->timer, on_timer, next > now ? next - now : 0, 0);
}

void fy__schedule_wake(struct fy_broker *b, uint32_t queue_id) {
  struct fy__sched *s = b->sched;
  if (!s || s->closing || b->cfg->role == FY_ROLE_SLAVE || queue_id >= s->n ||
      s->lv[queue_id].due_ms != DUE_IDLE)
    return;
  s->lv[queue_id].due_ms = 1;
  arm(s);
}

int fy__schedule_start(struct fy_broker *b) {
  struct fy__sched *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  uint64_t ms[FY_DELAY_LEVELS_MAX];
  int n = fy_delay_levels_parse(b->cfg->delay_levels, ms, FY_DELAY_LEVELS_MAX);
  s->n = n > 0 ? (size_t)n : 0;
  for (size_t i = 0; i < s->n; i++) {
    s->lv[i].delay_ms = ms[i];
    s->lv[i].due_ms = 1; /* look at every level once at start */
  }
  s->b = b;
  uv_timer_init(b->loop, &s->timer);
  s->timer.data = s;
  b->sched = s;
  if (b->cfg->role != FY_ROLE_SLAVE)
    arm(s);
  return 0;
}

void fy__schedule_close(struct fy_broker *b, uv_close_cb close_cb) {
  struct fy__sched *s = b->sched;
  s->closing = true;
  uv_timer_stop(&s->timer);
  s->timer.data = b;
  uv_close((uv_handle_t *)&s->timer, close_cb);
}

/* Re-puts still in flight when the store closed have completed (the store
 * drains them before its close callback), so nothing refers to s. */
void fy__schedule_free(struct fy_broker *b) {
  free(b->sched);
  b->sched = NULL;
}
