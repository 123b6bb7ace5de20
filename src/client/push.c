/*
 * The push consumer: RocketMQ's DefaultMQPushConsumer (concurrent mode).
 *
 * Who does what:
 *   - the client thread (loop) rebalances, finds start offsets, pulls with
 *     long polling, decodes and filters what arrives, and commits offsets;
 *   - consume threads (cfg.consume_threads) take batches of buffered
 *     messages and call the listener;
 *   - the caller's thread starts and closes.
 *
 * A process queue (struct fy__pq) holds one owned queue's buffered
 * messages, in queue-offset order, in a ring of fixed capacity
 * (queue_buffer_max_msgs + pull_batch_size): the loop stops pulling a queue
 * whose buffer holds queue_buffer_max_msgs messages or
 * queue_buffer_max_bytes bytes (flow control) and resumes when a consume
 * thread has made room (it wakes the loop through c->wake). Ring entries:
 *
 *   [head ......... head+cursor) dispatched: INFLIGHT, WAIT (redelivery
 *                                due at due_ms) or DONE
 *   [head+cursor .. head+count)  not yet dispatched
 *
 * DONE entries leave from the head only, so the offset to commit is the
 * head's queue offset, or next_offset (the next to pull) when the ring is
 * empty: never past a message not yet consumed. A batch that returns
 * FY_CONSUME_LATER goes back to WAIT with a doubling delay.
 *
 * Consume threads find work in c->ready (process queues with undispatched
 * or due messages; each queue at most once, so the list is bounded by the
 * queues owned) and c->delayed (queues whose only work is a redelivery
 * not yet due). c->mu guards rings, lists and process-queue refcounts.
 *
 * Process-queue states on the loop:
 *
 *   OFFSET  --start offset known-------------------> pull
 *   pull:   buffer full ---------------------------> PAUSED --room--> pull
 *           else ----------------------------------> PULLING
 *   PULLING --answer: found / none / moved---------> pull (again at once)
 *           --failure------------------------------> DELAYED (3 s) -> pull
 *   OFFSET  --failure------------------------------> DELAYED (3 s) -> OFFSET
 *   any     --rebalanced away / closing-------------> DROPPED
 *
 * A dropped queue's offset is committed first; answers still in flight
 * find it DROPPED and only release it. Freed when the last reference
 * (loop, rpc in flight, batch in a listener) goes.
 *
 * Rebalance (clustering): every group_check_interval_ms, per topic, ask one
 * broker of the route for the group's client ids, sort them, and take
 * AllocateMessageQueueAveragely's block of the topic's sorted read queues;
 * owned queues change only when the result does (or every
 * rebalance_interval_ms, forced). The protocol has no "group changed"
 * notification, so the frequent check stands in for it. Broadcasting owns
 * every queue and keeps offsets in a local file.
 *
 * Closing: STOP (loop: no more pulls) -> join consume threads (listeners
 * return) -> FINAL (loop: commit every owned queue's offset, write the
 * local file, UNREGISTER_CLIENT, close handles). The consumer's memory
 * goes when the loop drops its last reference (late pull answers).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "consumer"
#define PULL_MAX_BYTES (4u << 20)
#define QUICK_EMPTY_MS 50 /* an empty answer faster than this: wait this long */
#define RETRY_DELAY_MAX_MS 60000u

enum pc_state { PC_NEW, PC_RUNNING, PC_STOPPING, PC_CLOSED };

enum pq_state { PQ_OFFSET, PQ_PULLING, PQ_PAUSED, PQ_DELAYED, PQ_DROPPED };

enum { E_READY, E_INFLIGHT, E_WAIT, E_DONE };

struct entry {
  fy_message_view *m;
  uint64_t due_ms;
  uint32_t bytes;
  uint16_t attempts;
  uint8_t st;
};

struct fy__pq {
  fy_push_consumer *c;
  size_t sub;                 /* index in c->subs */
  fy_queue q;
  /* loop */
  struct fy__pq *prev, *next; /* c->pqs */
  enum pq_state state;
  uint64_t suggest_id;
  uint64_t pull_id;           /* broker id of the pull in flight */
  uint64_t pull_sent_ms;
  uint64_t pull_offset;       /* offset of the pull in flight */
  uint64_t committed, committing;
  bool have_committed;
  uv_timer_t timer;
  /* c->mu */
  struct entry *ring;
  uint32_t cap, head, count, cursor;
  uint64_t bytes;
  uint64_t next_offset;
  bool offset_known;
  uint32_t nwait;
  uint64_t wait_due_ms;
  bool paused, want_resume, dropped;
  bool in_ready, in_delayed;
  struct fy__pq *rnext, *dnext;
  uint32_t refs;
};

struct topic_rb {
  bool busy;                  /* a consumer-list query in flight */
  size_t cid_rot;             /* which brokerName to ask (moves on after a failure) */
  uint64_t last_ms;           /* last allocation applied */
  uint64_t last_full_ms;      /* last forced route refresh */
  uint64_t last_hb_ms;        /* last heartbeat asked for (not in the list) */
};

struct fy_push_consumer {
  fy_client *cl;
  fy_push_config cfg;
  char group[FY_CLIENT_GROUP_MAX];
  char offset_path[PATH_MAX];
  struct fy__sub subs[FY__SUBS_MAX];
  size_t nsubs;
  struct topic_rb rb[FY__SUBS_MAX];
  enum pc_state state;       /* written by the caller before start and by loop ops after */
  /* loop */
  struct fy__pq *pqs;
  size_t npqs;
  uv_timer_t tick, commit;
  uv_async_t wake;
  int loop_refs;
  bool local_dirty;
  fy_strmap *local;          /* broadcasting: "topic\1broker\1qid" -> offset + 1 */
  struct fy_push_consumer *next;
  /* consume threads (mu) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct fy__pq *ready_head, *ready_tail, *delayed;
  bool stop_threads;
  pthread_t *threads;
  size_t nthreads;
  struct fy_push_consumer *all_next; /* cl->all_push (cl->mu) */
};

static void pq_pull(struct fy__pq *pq);
static void pq_find_offset(struct fy__pq *pq);

/* ------------------------------------------------------------ process queues */

static uint64_t pq_commit_offset_locked(const struct fy__pq *pq) {
  return pq->count ? pq->ring[pq->head].m->queue_offset : pq->next_offset;
}

static void pq_free(struct fy__pq *pq) {
  for (uint32_t i = 0; i < pq->count; i++)
    fy_result_free(pq->ring[(pq->head + i) % pq->cap].m);
  free(pq->ring);
  free(pq);
}

/* Drops a reference under c->mu; true when pq must be freed (after unlock). */
static bool pq_unref_locked(struct fy__pq *pq) {
  fy_assert(pq->refs > 0);
  return --pq->refs == 0;
}

static void pq_unref(struct fy__pq *pq) {
  fy_push_consumer *c = pq->c;
  pthread_mutex_lock(&c->mu);
  bool f = pq_unref_locked(pq);
  pthread_mutex_unlock(&c->mu);
  if (f)
    pq_free(pq);
}

static void ready_push_locked(fy_push_consumer *c, struct fy__pq *pq) {
  if (pq->in_ready || pq->dropped)
    return;
  pq->in_ready = true;
  pq->rnext = NULL;
  if (c->ready_tail)
    c->ready_tail->rnext = pq;
  else
    c->ready_head = pq;
  c->ready_tail = pq;
  pthread_cond_signal(&c->cv);
}

static struct fy__pq *ready_pop_locked(fy_push_consumer *c) {
  struct fy__pq *pq = c->ready_head;
  if (!pq)
    return NULL;
  c->ready_head = pq->rnext;
  if (!c->ready_head)
    c->ready_tail = NULL;
  pq->in_ready = false;
  pq->rnext = NULL;
  return pq;
}

static void ready_remove_locked(fy_push_consumer *c, struct fy__pq *pq) {
  if (!pq->in_ready)
    return;
  struct fy__pq *prev = NULL;
  for (struct fy__pq *x = c->ready_head; x; prev = x, x = x->rnext) {
    if (x != pq)
      continue;
    if (prev)
      prev->rnext = x->rnext;
    else
      c->ready_head = x->rnext;
    if (c->ready_tail == x)
      c->ready_tail = prev;
    break;
  }
  pq->in_ready = false;
}

static void delayed_add_locked(fy_push_consumer *c, struct fy__pq *pq) {
  if (pq->in_delayed || pq->dropped)
    return;
  pq->in_delayed = true;
  pq->dnext = c->delayed;
  c->delayed = pq;
  pthread_cond_signal(&c->cv);
}

static void delayed_remove_locked(fy_push_consumer *c, struct fy__pq *pq) {
  if (!pq->in_delayed)
    return;
  for (struct fy__pq **pp = &c->delayed; *pp; pp = &(*pp)->dnext)
    if (*pp == pq) {
      *pp = pq->dnext;
      break;
    }
  pq->in_delayed = false;
}

static bool pq_full_locked(const fy_push_consumer *c, const struct fy__pq *pq) {
  return pq->count >= c->cfg.queue_buffer_max_msgs || pq->bytes >= c->cfg.queue_buffer_max_bytes;
}

/* Takes a batch: due redeliveries first (they are older), else fresh
 * messages. Fills idx with ring positions. */
static size_t pq_take_locked(struct fy__pq *pq, uint64_t now, uint32_t *idx, size_t max) {
  size_t n = 0;
  if (pq->nwait && pq->wait_due_ms <= now) {
    uint64_t next_due = UINT64_MAX;
    for (uint32_t i = 0; i < pq->cursor; i++) {
      uint32_t k = (pq->head + i) % pq->cap;
      struct entry *e = &pq->ring[k];
      if (e->st != E_WAIT)
        continue;
      if (e->due_ms <= now && n < max) {
        e->st = E_INFLIGHT;
        pq->nwait--;
        idx[n++] = k;
      } else if (e->due_ms < next_due) {
        next_due = e->due_ms;
      }
    }
    pq->wait_due_ms = next_due;
    if (n)
      return n;
  }
  while (n < max && pq->cursor < pq->count) {
    uint32_t k = (pq->head + pq->cursor) % pq->cap;
    pq->ring[k].st = E_INFLIGHT;
    pq->cursor++;
    idx[n++] = k;
  }
  return n;
}

static bool pq_has_work_locked(const struct fy__pq *pq, uint64_t now) {
  return pq->cursor < pq->count || (pq->nwait && pq->wait_due_ms <= now);
}

/* After a listener returned: records the outcome, frees consumed messages
 * from the head, reschedules the queue, and asks the loop to resume
 * pulling if the buffer has room again. Returns true if the loop must be
 * woken. */
static bool pq_batch_done_locked(fy_push_consumer *c, struct fy__pq *pq, const uint32_t *idx,
                                 size_t n, fy_consume_result r, uint64_t now) {
  for (size_t i = 0; i < n; i++) {
    struct entry *e = &pq->ring[idx[i]];
    fy_assert(e->st == E_INFLIGHT);
    if (r == FY_CONSUME_SUCCESS) {
      e->st = E_DONE;
      continue;
    }
    e->st = E_WAIT;
    e->attempts++;
    uint64_t delay = (uint64_t)c->cfg.retry_delay_ms << (e->attempts > 7 ? 6 : e->attempts - 1);
    if (delay > RETRY_DELAY_MAX_MS)
      delay = RETRY_DELAY_MAX_MS;
    e->due_ms = now + delay;
    e->m->reconsume_times++;
    if (pq->nwait++ == 0 || e->due_ms < pq->wait_due_ms)
      pq->wait_due_ms = e->due_ms;
  }
  while (pq->count && pq->ring[pq->head].st == E_DONE) {
    struct entry *e = &pq->ring[pq->head];
    fy_result_free(e->m);
    e->m = NULL;
    pq->bytes -= e->bytes;
    pq->head = (pq->head + 1) % pq->cap;
    pq->count--;
    fy_assert(pq->cursor > 0);
    pq->cursor--;
  }
  if (pq_has_work_locked(pq, now))
    ready_push_locked(c, pq);
  else if (pq->nwait)
    delayed_add_locked(c, pq);
  if (pq->paused && !pq_full_locked(c, pq)) {
    pq->paused = false;
    pq->want_resume = true;
    return true;
  }
  return false;
}

static void *consume_main(void *arg) {
  fy_push_consumer *c = arg;
  size_t max = c->cfg.consume_batch_max;
  const fy_message_view **views = calloc(max, sizeof *views);
  uint32_t *idx = calloc(max, sizeof *idx);
  fy_assert(views && idx);
  pthread_mutex_lock(&c->mu);
  while (!c->stop_threads) {
    uint64_t now = fy__cl_now_ms();
    struct fy__pq *pq = ready_pop_locked(c);
    if (!pq) {
      uint64_t next = UINT64_MAX;
      for (struct fy__pq **pp = &c->delayed; *pp;) {
        struct fy__pq *x = *pp;
        if (x->wait_due_ms <= now) {
          *pp = x->dnext;
          x->in_delayed = false;
          ready_push_locked(c, x);
        } else {
          if (x->wait_due_ms < next)
            next = x->wait_due_ms;
          pp = &x->dnext;
        }
      }
      if (c->ready_head)
        continue;
      if (next == UINT64_MAX) {
        pthread_cond_wait(&c->cv, &c->mu);
      } else {
        struct timespec ts = {.tv_sec = (time_t)(next / 1000),
                              .tv_nsec = (long)(next % 1000) * 1000000L};
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
      }
      continue;
    }
    size_t n = pq_take_locked(pq, now, idx, max);
    if (pq_has_work_locked(pq, now))
      ready_push_locked(c, pq); /* another thread may take the next batch */
    else if (pq->nwait)
      delayed_add_locked(c, pq);
    if (n == 0)
      continue;
    pq->refs++;
    for (size_t i = 0; i < n; i++)
      views[i] = pq->ring[idx[i]].m;
    pthread_mutex_unlock(&c->mu);
    fy_consume_result r = c->cfg.listener(views, n, c->cfg.listener_arg);
    if (r != FY_CONSUME_SUCCESS)
      r = FY_CONSUME_LATER;
    pthread_mutex_lock(&c->mu);
    bool wake = false;
    if (!pq->dropped)
      wake = pq_batch_done_locked(c, pq, idx, n, r, fy__cl_now_ms());
    if (wake)
      uv_async_send(&c->wake);
    if (pq_unref_locked(pq)) {
      pthread_mutex_unlock(&c->mu);
      pq_free(pq);
      pthread_mutex_lock(&c->mu);
    }
  }
  pthread_mutex_unlock(&c->mu);
  free(views);
  free(idx);
  return NULL;
}

/* --------------------------------------------------------- consumer refs */

static void pc_free(fy_push_consumer *c) {
  if (c->local)
    fy_strmap_free(c->local);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c->threads);
  free(c);
}

static void pc_unref(fy_push_consumer *c) {
  fy_assert(c->loop_refs > 0);
  if (--c->loop_refs == 0) {
    fy_debug(MOD, "group %s: consumer freed", c->group);
    pc_free(c);
  }
}

static void on_handle_closed(uv_handle_t *h) { pc_unref(h->data); }

/* ---------------------------------------------------------- loop-side rpcs */

typedef void (*pq_rpc_cb)(struct fy__pq *pq, int err, const fy_frame *resp);

struct pq_call {
  struct fy__pq *pq;
  pq_rpc_cb cb;
};

static void on_pq_call(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct pq_call *k = arg;
  struct fy__pq *pq = k->pq;
  pq_rpc_cb cb = k->cb;
  fy_push_consumer *c = pq->c;
  free(k);
  if (pq->state != PQ_DROPPED && c->state == PC_RUNNING)
    cb(pq, err, resp);
  pq_unref(pq);
  pc_unref(c);
}

/* An rpc on behalf of pq: holds references on pq and the consumer until cb. */
static int pq_call(struct fy__pq *pq, const char *addr, uint16_t code, const ProtobufCMessage *msg,
                   uint32_t timeout_ms, pq_rpc_cb cb) {
  fy_push_consumer *c = pq->c;
  struct pq_call *k = malloc(sizeof *k);
  if (!k)
    return -ENOMEM;
  k->pq = pq;
  k->cb = cb;
  pthread_mutex_lock(&c->mu);
  pq->refs++;
  pthread_mutex_unlock(&c->mu);
  c->loop_refs++;
  int err = fy__call(c->cl, addr, code, msg, NULL, 0, timeout_ms, on_pq_call, k);
  if (err) {
    free(k);
    pq_unref(pq);
    c->loop_refs--;
  }
  return err;
}

static const struct fy__route *pq_route(struct fy__pq *pq) {
  struct fy__rentry *e = fy__route_entry(pq->c->cl, pq->q.topic);
  return e ? e->route : NULL;
}

static void pq_refresh_route(struct fy__pq *pq) {
  fy_client *cl = pq->c->cl;
  struct fy__rentry *e = fy__route_entry(cl, pq->q.topic);
  if (e && fy__cl_now_ms() - e->fetched_ms > 1000)
    fy__route_refresh(cl, e);
}

static void on_pq_timer(uv_timer_t *t) {
  struct fy__pq *pq = t->data;
  if (pq->state != PQ_DELAYED || pq->c->state != PC_RUNNING)
    return;
  bool known;
  pthread_mutex_lock(&pq->c->mu);
  known = pq->offset_known;
  pthread_mutex_unlock(&pq->c->mu);
  if (known)
    pq_pull(pq);
  else
    pq_find_offset(pq);
}

static void pq_delay(struct fy__pq *pq, uint64_t ms) {
  pq->state = PQ_DELAYED;
  uv_timer_start(&pq->timer, on_pq_timer, ms, 0);
}

/* ------------------------------------------------------------------ offsets */

static size_t local_key(const fy_queue *q, char *buf, size_t size) {
  int n = snprintf(buf, size, "%s\x01%s\x01%u", q->topic, q->broker_name, q->queue_id);
  return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

static void pq_set_start(struct fy__pq *pq, uint64_t off, const char *why) {
  fy_push_consumer *c = pq->c;
  pthread_mutex_lock(&c->mu);
  pq->next_offset = off;
  pq->offset_known = true;
  pthread_mutex_unlock(&c->mu);
  fy_info(MOD, "group %s: %s/%s/%u starts at offset %llu (%s)", c->group, pq->q.topic,
          pq->q.broker_name, pq->q.queue_id, (unsigned long long)off, why);
  pq_pull(pq);
}

static void on_start_offset(struct fy__pq *pq, int err, const fy_frame *resp) {
  if (!err)
    err = fy__cl_status_err(resp->status);
  Ferry__V1__QueueOffsetResponse *r = NULL;
  if (!err)
    err = fy_frame_unpack(resp, &ferry__v1__queue_offset_response__descriptor,
                          (ProtobufCMessage **)&r);
  if (err) {
    fy_warn(MOD, "group %s: start offset of %s/%s/%u: %s; retrying in 3 s", pq->c->group,
            pq->q.topic, pq->q.broker_name, pq->q.queue_id, fy_client_strerror(err));
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
    return;
  }
  uint64_t off = r->offset;
  fy_pb_free(&r->base);
  const char *why = pq->c->cfg.from == FY_FROM_FIRST_OFFSET ? "no committed offset: first"
                    : pq->c->cfg.from == FY_FROM_TIMESTAMP  ? "no committed offset: by time"
                                                            : "no committed offset: last";
  pq_set_start(pq, off, why);
}

/* No committed offset: consume_from decides. */
static void pq_offset_from_policy(struct fy__pq *pq) {
  fy_push_consumer *c = pq->c;
  const struct fy__route *r = pq_route(pq);
  uint64_t id;
  const char *addr = r ? fy__route_admin_addr(pq->c->cl, r, pq->q.broker_name, &id) : NULL;
  if (!addr) {
    pq_refresh_route(pq);
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
    return;
  }
  Ferry__V1__QueueOffsetRequest req = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
  req.group = c->group;
  req.topic = pq->q.topic;
  req.queue_id = pq->q.queue_id;
  uint16_t code = FERRY__V1__OP__OP_GET_MAX_OFFSET;
  if (c->cfg.from == FY_FROM_FIRST_OFFSET)
    code = FERRY__V1__OP__OP_GET_MIN_OFFSET;
  else if (c->cfg.from == FY_FROM_TIMESTAMP) {
    code = FERRY__V1__OP__OP_SEARCH_OFFSET_BY_TIME;
    req.timestamp = c->cfg.from_timestamp_ms;
  }
  pq->state = PQ_OFFSET;
  if (pq_call(pq, addr, code, &req.base, c->cl->cfg.timeout_ms, on_start_offset))
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
}

static void on_committed_offset(struct fy__pq *pq, int err, const fy_frame *resp) {
  if (!err && resp->status == FERRY__V1__STATUS__NOT_FOUND) {
    pq_offset_from_policy(pq);
    return;
  }
  if (!err)
    err = fy__cl_status_err(resp->status);
  Ferry__V1__QueueOffsetResponse *r = NULL;
  if (!err)
    err = fy_frame_unpack(resp, &ferry__v1__queue_offset_response__descriptor,
                          (ProtobufCMessage **)&r);
  if (err) {
    fy_warn(MOD, "group %s: committed offset of %s/%s/%u: %s; retrying in 3 s", pq->c->group,
            pq->q.topic, pq->q.broker_name, pq->q.queue_id, fy_client_strerror(err));
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
    return;
  }
  pq->committed = r->offset;
  pq->have_committed = true;
  uint64_t off = r->offset;
  fy_pb_free(&r->base);
  pq_set_start(pq, off, "committed");
}

static void pq_find_offset(struct fy__pq *pq) {
  fy_push_consumer *c = pq->c;
  pq->state = PQ_OFFSET;
  if (c->cfg.model == FY_BROADCASTING) {
    char key[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 16];
    void *v = fy_strmap_get(c->local, key, local_key(&pq->q, key, sizeof key));
    if (v) {
      pq->committed = (uint64_t)(uintptr_t)v - 1;
      pq->have_committed = true;
      pq_set_start(pq, pq->committed, "local offset file");
      return;
    }
    pq_offset_from_policy(pq);
    return;
  }
  const struct fy__route *r = pq_route(pq);
  uint64_t id;
  const char *addr = r ? fy__route_admin_addr(pq->c->cl, r, pq->q.broker_name, &id) : NULL;
  if (!addr) {
    pq_refresh_route(pq);
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
    return;
  }
  Ferry__V1__QueueOffsetRequest req = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
  req.group = c->group;
  req.topic = pq->q.topic;
  req.queue_id = pq->q.queue_id;
  if (pq_call(pq, addr, FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET, &req.base,
              c->cl->cfg.timeout_ms, on_committed_offset))
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
}

static void on_commit(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct fy__pq *pq = arg;
  fy_push_consumer *c = pq->c;
  if (!err)
    err = fy__cl_status_err(resp->status);
  if (err)
    fy_warn(MOD, "group %s: commit of %s/%s/%u at %llu failed: %s", c->group, pq->q.topic,
            pq->q.broker_name, pq->q.queue_id, (unsigned long long)pq->committing,
            fy_client_strerror(err));
  else {
    pq->committed = pq->committing;
    pq->have_committed = true;
  }
  pq_unref(pq);
  pc_unref(c);
}

/* Commits pq's offset if it moved (clustering: to the master, or a slave
 * without master; broadcasting: into the local table). */
static void pq_commit(struct fy__pq *pq) {
  fy_push_consumer *c = pq->c;
  pthread_mutex_lock(&c->mu);
  bool known = pq->offset_known;
  uint64_t off = pq_commit_offset_locked(pq);
  pthread_mutex_unlock(&c->mu);
  if (!known || (pq->have_committed && off == pq->committed))
    return;
  if (c->cfg.model == FY_BROADCASTING) {
    char key[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 16];
    fy_strmap_put(c->local, key, local_key(&pq->q, key, sizeof key), (void *)(uintptr_t)(off + 1));
    pq->committed = off;
    pq->have_committed = true;
    c->local_dirty = true;
    return;
  }
  const struct fy__route *r = pq_route(pq);
  uint64_t id;
  const char *addr = r ? fy__route_admin_addr(pq->c->cl, r, pq->q.broker_name, &id) : NULL;
  if (!addr)
    return;
  Ferry__V1__QueueOffsetRequest req = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
  req.group = c->group;
  req.topic = pq->q.topic;
  req.queue_id = pq->q.queue_id;
  req.offset = off;
  pq->committing = off;
  pthread_mutex_lock(&c->mu);
  pq->refs++;
  pthread_mutex_unlock(&c->mu);
  c->loop_refs++;
  if (fy__call(c->cl, addr, FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET, &req.base, NULL, 0,
               c->cl->cfg.timeout_ms, on_commit, pq)) {
    pq_unref(pq);
    c->loop_refs--;
  }
}

/* The local offset file: "topic\tbrokerName\tqueueId\toffset\n" lines,
 * replaced atomically (temporary file, fsync, rename). */
static void local_write(fy_push_consumer *c) {
  if (!c->local_dirty)
    return;
  char tmp[PATH_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", c->offset_path);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    fy_warn(MOD, "group %s: cannot write %s: %s", c->group, tmp, strerror(errno));
    return;
  }
  size_t pos = 0;
  const char *k;
  size_t kl;
  void *v;
  while (fy_strmap_next(c->local, &pos, &k, &kl, &v)) {
    char key[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 16];
    snprintf(key, sizeof key, "%.*s", (int)kl, k);
    for (char *p = key; *p; p++)
      if (*p == '\x01')
        *p = '\t';
    fprintf(f, "%s\t%llu\n", key, (unsigned long long)((uintptr_t)v - 1));
  }
  bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok &= fclose(f) == 0;
  if (!ok || rename(tmp, c->offset_path) != 0) {
    fy_warn(MOD, "group %s: cannot write %s: %s", c->group, c->offset_path, strerror(errno));
    unlink(tmp);
    return;
  }
  c->local_dirty = false;
}

static int local_load(fy_push_consumer *c) {
  FILE *f = fopen(c->offset_path, "r");
  if (!f)
    return errno == ENOENT ? 0 : -errno;
  char line[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 64];
  size_t n = 0;
  while (fgets(line, sizeof line, f) && n < 1000000) {
    char topic[FY_CLIENT_TOPIC_MAX], broker[FY_CLIENT_NAME_MAX];
    unsigned qid;
    unsigned long long off;
    _Static_assert(FY_CLIENT_TOPIC_MAX == 128 && FY_CLIENT_NAME_MAX == 128,
                   "the widths below are the buffers' sizes less one");
    if (sscanf(line, "%127[^\t]\t%127[^\t]\t%u\t%llu", topic, broker, &qid, &off) != 4)
      continue;
    fy_queue q;
    memset(&q, 0, sizeof q);
    snprintf(q.topic, sizeof q.topic, "%s", topic);
    snprintf(q.broker_name, sizeof q.broker_name, "%s", broker);
    q.queue_id = qid;
    char key[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 16];
    fy_strmap_put(c->local, key, local_key(&q, key, sizeof key), (void *)(uintptr_t)(off + 1));
    n++;
  }
  fclose(f);
  return 0;
}

/* -------------------------------------------------------------------- pulls */

struct decode {
  fy_push_consumer *c;
  struct fy__pq *pq;
  fy_message_view **msgs;
  uint32_t *sizes;
  size_t n, room;
  uint64_t stop_offset; /* first offset not taken, when room ran out */
  bool stopped;
  uint64_t broker_id;
};

static int decode_one(const struct fy_msg *m, void *arg) {
  struct decode *d = arg;
  const char *tags = "";
  size_t tl = 0;
  char tbuf[FY__EXPR_MAX];
  if (fy_props_get(m->props, m->props_len, FY_PROP_TAGS, &tags, &tl)) {
    if (tl >= sizeof tbuf)
      tl = sizeof tbuf - 1;
    memcpy(tbuf, tags, tl);
  }
  tbuf[tl] = '\0';
  if (!fy__sub_match(&d->c->subs[d->pq->sub], tbuf))
    return 0;
  if (d->n == d->room) {
    d->stopped = true;
    d->stop_offset = m->queue_offset;
    return 1; /* ends the walk */
  }
  struct fy__arena *a;
  fy_message_view *v = fy__result_new(sizeof *v, m->total_size + 512, &a);
  if (!v)
    return -ENOMEM;
  int err = fy__msg_view_build(m, d->pq->q.broker_name, d->broker_id, a, v);
  if (err) {
    fy_result_free(v);
    return err;
  }
  d->sizes[d->n] = m->body_len;
  d->msgs[d->n++] = v;
  return 0;
}

static void on_pull_resp(struct fy__pq *pq, int err, const fy_frame *resp) {
  fy_push_consumer *c = pq->c;
  if (err) {
    fy_warn(MOD, "group %s: pull %s/%s/%u: %s; retrying in 3 s", c->group, pq->q.topic,
            pq->q.broker_name, pq->q.queue_id, fy_client_strerror(err));
    pq->suggest_id = 0;
    pq_refresh_route(pq);
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
    return;
  }
  int st = fy__pull_status(resp->status);
  Ferry__V1__PullResponse *pr = NULL;
  if (st < 0 ||
      fy_frame_unpack(resp, &ferry__v1__pull_response__descriptor, (ProtobufCMessage **)&pr)) {
    char text[160] = "";
    if (st < 0)
      fy_frame_error_text(resp, text, sizeof text);
    fy_warn(MOD, "group %s: pull %s/%s/%u: %s %s; retrying in 3 s", c->group, pq->q.topic,
            pq->q.broker_name, pq->q.queue_id,
            st < 0 ? fy__cl_status_name(resp->status) : "malformed answer", text);
    pq->suggest_id = 0;
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
    return;
  }
  pq->suggest_id = pr->suggest_broker_id;
  uint64_t next = pr->next_offset;
  uint32_t count = pr->count;
  fy_pb_free(&pr->base);
  uint64_t elapsed = fy__cl_now_ms() - pq->pull_sent_ms;

  if (st == FY_PULL_FOUND && count > 0) {
    pthread_mutex_lock(&c->mu);
    size_t room = pq->cap - pq->count;
    pthread_mutex_unlock(&c->mu);
    struct decode d = {.c = c, .pq = pq, .room = room, .broker_id = pq->pull_id};
    d.msgs = calloc(room ? room : 1, sizeof *d.msgs);
    d.sizes = calloc(room ? room : 1, sizeof *d.sizes);
    int werr = d.msgs && d.sizes ? fy__records_walk(resp->raw, resp->raw_len, count, decode_one, &d)
                                 : -ENOMEM;
    if (werr < 0) {
      for (size_t i = 0; i < d.n; i++)
        fy_result_free(d.msgs[i]);
      free(d.msgs);
      free(d.sizes);
      fy_error(MOD, "group %s: pull %s/%s/%u from broker %llu: %s; retrying in 3 s", c->group,
               pq->q.topic, pq->q.broker_name, pq->q.queue_id,
               (unsigned long long)pq->pull_id,
               werr == -FY_ECORRUPT ? "answer holds invalid records" : fy_client_strerror(werr));
      pq->suggest_id = 0;
      pq_delay(pq, FY__EXCEPTION_DELAY_MS);
      return;
    }
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < d.n; i++) {
      uint32_t k = (pq->head + pq->count) % pq->cap;
      pq->ring[k] = (struct entry){.m = d.msgs[i], .bytes = d.sizes[i], .st = E_READY};
      pq->count++;
      pq->bytes += d.sizes[i];
    }
    pq->next_offset = d.stopped ? d.stop_offset : next;
    if (d.n)
      ready_push_locked(c, pq);
    pthread_mutex_unlock(&c->mu);
    free(d.msgs);
    free(d.sizes);
    pq_pull(pq);
    return;
  }
  pthread_mutex_lock(&c->mu);
  pq->next_offset = next;
  pthread_mutex_unlock(&c->mu);
  if (st == FY_PULL_OFFSET_ILLEGAL) {
    fy_warn(MOD, "group %s: %s/%s/%u: offset moved; continuing at %llu", c->group, pq->q.topic,
            pq->q.broker_name, pq->q.queue_id, (unsigned long long)next);
    pq_commit(pq);
  }
  if (next == pq->pull_offset && elapsed < QUICK_EMPTY_MS) {
    /* No progress, answered at once (a broker that does not hold empty
     * pulls, a slave that cannot serve this offset yet): no busy loop. */
    pq_delay(pq, QUICK_EMPTY_MS);
    return;
  }
  pq_pull(pq);
}

static void pq_pull(struct fy__pq *pq) {
  fy_push_consumer *c = pq->c;
  if (pq->state == PQ_DROPPED || c->state != PC_RUNNING)
    return;
  pthread_mutex_lock(&c->mu);
  bool full = pq_full_locked(c, pq);
  if (full)
    pq->paused = true;
  uint64_t offset = pq->next_offset;
  uint64_t commit = pq_commit_offset_locked(pq);
  pthread_mutex_unlock(&c->mu);
  if (full) {
    pq->state = PQ_PAUSED;
    return;
  }
  const struct fy__route *r = pq_route(pq);
  const char *addr =
      r ? fy__route_sub_addr(c->cl, r, pq->q.broker_name, pq->suggest_id, &pq->pull_id) : NULL;
  if (!addr) {
    pq_refresh_route(pq);
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
    return;
  }
  Ferry__V1__PullRequest req;
  int64_t hashes[FY__TAGS_MAX];
  fy__pull_request_init(&req, c->group, pq->q.topic, pq->q.queue_id, offset, c->cfg.pull_batch_size,
                        PULL_MAX_BYTES, c->cfg.suspend_timeout_ms, &c->subs[pq->sub], hashes);
  /* Piggy-backed commit, to the master only (RocketMQ clears the flag for
   * slaves). */
  if (c->cfg.model == FY_CLUSTERING && pq->pull_id == 0 && commit > 0) {
    req.has_commit_offset = true;
    req.commit_offset = commit;
  }
  pq->state = PQ_PULLING;
  pq->pull_sent_ms = fy__cl_now_ms();
  pq->pull_offset = offset;
  int err = pq_call(pq, addr, FERRY__V1__OP__OP_PULL, &req.base, c->cfg.suspend_timeout_ms + 5000,
                    on_pull_resp);
  if (err) {
    fy_warn(MOD, "group %s: pull %s/%s/%u: %s; retrying in 3 s", c->group, pq->q.topic,
            pq->q.broker_name, pq->q.queue_id, fy_client_strerror(err));
    pq_delay(pq, FY__EXCEPTION_DELAY_MS);
  }
}

static void on_pq_timer_closed(uv_handle_t *h) {
  struct fy__pq *pq = h->data;
  fy_push_consumer *c = pq->c;
  pq_unref(pq);
  pc_unref(c);
}

static struct fy__pq *pq_new(fy_push_consumer *c, size_t sub, const char *broker_name,
                             uint32_t queue_id) {
  struct fy__pq *pq = calloc(1, sizeof *pq);
  if (!pq)
    return NULL;
  pq->cap = c->cfg.queue_buffer_max_msgs + c->cfg.pull_batch_size;
  pq->ring = calloc(pq->cap, sizeof *pq->ring);
  if (!pq->ring) {
    free(pq);
    return NULL;
  }
  pq->c = c;
  pq->sub = sub;
  snprintf(pq->q.topic, sizeof pq->q.topic, "%s", c->subs[sub].topic);
  snprintf(pq->q.broker_name, sizeof pq->q.broker_name, "%s", broker_name);
  pq->q.queue_id = queue_id;
  pq->refs = 1; /* the loop's, dropped when the timer has closed */
  uv_timer_init(&c->cl->loop, &pq->timer);
  pq->timer.data = pq;
  c->loop_refs++;
  pq->next = c->pqs;
  if (c->pqs)
    c->pqs->prev = pq;
  c->pqs = pq;
  c->npqs++;
  return pq;
}

static void pq_drop(struct fy__pq *pq) {
  fy_push_consumer *c = pq->c;
  pthread_mutex_lock(&c->mu);
  pq->dropped = true;
  ready_remove_locked(c, pq);
  delayed_remove_locked(c, pq);
  pthread_mutex_unlock(&c->mu);
  pq->state = PQ_DROPPED;
  if (pq->prev)
    pq->prev->next = pq->next;
  else
    c->pqs = pq->next;
  if (pq->next)
    pq->next->prev = pq->prev;
  c->npqs--;
  uv_timer_stop(&pq->timer);
  uv_close((uv_handle_t *)&pq->timer, on_pq_timer_closed);
}

/* ---------------------------------------------------------------- rebalance */

static void apply(fy_push_consumer *c, size_t sub, const struct fy__mq *mqs, size_t n) {
  size_t dropped = 0, added = 0;
  for (struct fy__pq *pq = c->pqs, *next; pq; pq = next) {
    next = pq->next;
    if (pq->sub != sub)
      continue;
    bool keep = false;
    for (size_t i = 0; i < n && !keep; i++)
      keep = mqs[i].queue_id == pq->q.queue_id && !strcmp(mqs[i].broker_name, pq->q.broker_name);
    if (!keep) {
      pq_commit(pq);
      pq_drop(pq);
      dropped++;
    }
  }
  for (size_t i = 0; i < n; i++) {
    bool have = false;
    for (struct fy__pq *pq = c->pqs; pq && !have; pq = pq->next)
      have = pq->sub == sub && pq->q.queue_id == mqs[i].queue_id &&
             !strcmp(pq->q.broker_name, mqs[i].broker_name);
    if (have)
      continue;
    struct fy__pq *pq = pq_new(c, sub, mqs[i].broker_name, mqs[i].queue_id);
    if (!pq) {
      fy_error(MOD, "group %s: out of memory adding a queue", c->group);
      continue;
    }
    added++;
    pq_find_offset(pq);
  }
  c->rb[sub].last_ms = fy__cl_now_ms();
  if (dropped || added)
    fy_info(MOD, "group %s: topic %s rebalanced: %zu queues owned (+%zu -%zu)", c->group,
            c->subs[sub].topic, n, added, dropped);
}

struct cids_ctx {
  fy_push_consumer *c;
  size_t sub;
};

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void on_cids(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct cids_ctx *x = arg;
  fy_push_consumer *c = x->c;
  size_t sub = x->sub;
  free(x);
  c->rb[sub].busy = false;
  if (c->state != PC_RUNNING)
    goto out;
  if (!err)
    err = fy__cl_status_err(resp->status);
  Ferry__V1__ConsumerList *cl = NULL;
  if (!err)
    err = fy_frame_unpack(resp, &ferry__v1__consumer_list__descriptor, (ProtobufCMessage **)&cl);
  if (err) {
    fy_debug(MOD, "group %s: consumer list: %s", c->group, fy_client_strerror(err));
    c->rb[sub].cid_rot++;
    goto out;
  }
  if (cl->n_client_ids)
    qsort(cl->client_ids, cl->n_client_ids, sizeof *cl->client_ids, cmp_str);
  size_t self = SIZE_MAX;
  for (size_t i = 0; i < cl->n_client_ids; i++)
    if (!strcmp(cl->client_ids[i], c->cl->client_id))
      self = i;
  struct fy__rentry *e = fy__route_entry(c->cl, c->subs[sub].topic);
  if (self == SIZE_MAX || !e || !e->route) {
    /* Not registered (yet, or the broker restarted): heartbeat now and keep
     * the current queues rather than drop them. */
    uint64_t now = fy__cl_now_ms();
    if (now - c->rb[sub].last_hb_ms > 1000) {
      c->rb[sub].last_hb_ms = now;
      fy__heartbeat_now(c->cl);
    }
    fy_pb_free(&cl->base);
    goto out;
  }
  size_t first, count;
  fy__alloc_averagely(e->route->nsub, cl->n_client_ids, self, &first, &count);
  apply(c, sub, e->route->sub + first, count);
  fy_pb_free(&cl->base);
out:
  pc_unref(c);
}

static void rebalance_topic(fy_push_consumer *c, size_t sub) {
  struct topic_rb *rb = &c->rb[sub];
  if (c->state != PC_RUNNING || rb->busy)
    return;
  struct fy__rentry *e = fy__route_entry(c->cl, c->subs[sub].topic);
  if (!e)
    return;
  if (!e->route) {
    fy__route_refresh(c->cl, e);
    return;
  }
  if (c->cfg.model == FY_BROADCASTING) {
    apply(c, sub, e->route->sub, e->route->nsub);
    return;
  }
  if (e->route->nbd == 0) {
    apply(c, sub, NULL, 0);
    return;
  }
  const struct fy__bdata *b = &e->route->bd[rb->cid_rot % e->route->nbd];
  uint64_t id;
  const char *addr = fy__route_admin_addr(c->cl, e->route, b->name, &id);
  if (!addr) {
    rb->cid_rot++;
    return;
  }
  struct cids_ctx *x = malloc(sizeof *x);
  if (!x)
    return;
  x->c = c;
  x->sub = sub;
  Ferry__V1__GetConsumerListRequest req = FERRY__V1__GET_CONSUMER_LIST_REQUEST__INIT;
  req.group = c->group;
  rb->busy = true;
  c->loop_refs++;
  if (fy__call(c->cl, addr, FERRY__V1__OP__OP_GET_CONSUMER_LIST, &req.base, NULL, 0,
               c->cl->cfg.timeout_ms, on_cids, x)) {
    free(x);
    rb->busy = false;
    rb->cid_rot++;
    c->loop_refs--;
  }
}

static void on_tick(uv_timer_t *t) {
  fy_push_consumer *c = t->data;
  uint64_t now = fy__cl_now_ms();
  for (size_t i = 0; i < c->nsubs; i++) {
    /* A full rebalance also re-reads the route now rather than at the
     * client's next refresh. */
    if (now - c->rb[i].last_full_ms >= c->cfg.rebalance_interval_ms) {
      struct fy__rentry *e = fy__route_entry(c->cl, c->subs[i].topic);
      if (e)
        fy__route_refresh(c->cl, e);
      c->rb[i].last_full_ms = now;
    }
    rebalance_topic(c, i);
  }
}

static void on_commit_timer(uv_timer_t *t) {
  fy_push_consumer *c = t->data;
  for (struct fy__pq *pq = c->pqs; pq; pq = pq->next)
    pq_commit(pq);
  if (c->cfg.model == FY_BROADCASTING)
    local_write(c);
}

static void on_wake(uv_async_t *a) {
  fy_push_consumer *c = a->data;
  for (struct fy__pq *pq = c->pqs; pq; pq = pq->next) {
    pthread_mutex_lock(&c->mu);
    bool resume = pq->want_resume;
    pq->want_resume = false;
    pthread_mutex_unlock(&c->mu);
    if (resume && pq->state == PQ_PAUSED)
      pq_pull(pq);
  }
}

/* ------------------------------------------------------------- heartbeats */

size_t fy__push_heartbeat_data(fy_client *cl, struct fy__arena *a,
                               Ferry__V1__ConsumerData ***out) {
  size_t n = 0;
  for (fy_push_consumer *c = cl->consumers; c; c = c->next)
    n++;
  Ferry__V1__ConsumerData **cds = fy__cl_arena_alloc(a, (n ? n : 1) * sizeof *cds);
  if (!cds)
    return 0;
  size_t i = 0;
  for (fy_push_consumer *c = cl->consumers; c; c = c->next) {
    Ferry__V1__ConsumerData *cd = fy__cl_arena_alloc(a, sizeof *cd);
    Ferry__V1__Subscription **subs = fy__cl_arena_alloc(a, c->nsubs * sizeof *subs);
    char *from = fy__cl_arena_alloc(a, 32);
    if (!cd || !subs || !from)
      return 0;
    ferry__v1__consumer_data__init(cd);
    cd->group = c->group;
    cd->broadcasting = c->cfg.model == FY_BROADCASTING;
    if (c->cfg.from == FY_FROM_FIRST_OFFSET)
      snprintf(from, 32, "first");
    else if (c->cfg.from == FY_FROM_TIMESTAMP)
      snprintf(from, 32, "%lld", (long long)c->cfg.from_timestamp_ms);
    else
      snprintf(from, 32, "last");
    cd->consume_from = from;
    for (size_t k = 0; k < c->nsubs; k++) {
      Ferry__V1__Subscription *s = fy__cl_arena_alloc(a, sizeof *s);
      if (!s)
        return 0;
      ferry__v1__subscription__init(s);
      s->topic = c->subs[k].topic;
      s->expression = c->subs[k].expr;
      subs[k] = s;
    }
    cd->subscriptions = subs;
    cd->n_subscriptions = c->nsubs;
    cds[i++] = cd;
  }
  *out = cds;
  return i;
}

/* Every address of every brokerName serving one of c's topics. */
static void pc_addrs(fy_push_consumer *c, fy_strmap *addrs) {
  for (size_t k = 0; k < c->nsubs; k++) {
    struct fy__rentry *e = fy__route_entry(c->cl, c->subs[k].topic);
    if (!e || !e->route)
      continue;
    for (size_t i = 0; i < e->route->nbd; i++)
      for (size_t j = 0; j < e->route->bd[i].naddrs; j++) {
        const char *a = e->route->bd[i].addrs[j].addr;
        fy_strmap_put(addrs, a, strlen(a), (void *)a);
      }
  }
}

void fy__push_heartbeat_addrs(fy_client *cl, fy_strmap *addrs) {
  for (fy_push_consumer *c = cl->consumers; c; c = c->next)
    pc_addrs(c, addrs);
}

/* ---------------------------------------------------------------- lifecycle */

struct life_op {
  struct fy__op base;
  fy_push_consumer *c;
  int kind; /* LIFE_START, LIFE_STOP, LIFE_FINAL */
  size_t outstanding;
  bool ready;
};

enum { LIFE_START, LIFE_STOP, LIFE_FINAL };

static void start_go(struct life_op *op) {
  fy_push_consumer *c = op->c;
  fy__heartbeat_now(c->cl);
  for (size_t i = 0; i < c->nsubs; i++)
    rebalance_topic(c, i);
  fy__op_complete(&op->base, 0);
}

static void on_start_route(struct fy__op *base, int err, struct fy__rentry *e) {
  struct life_op *op = (struct life_op *)base;
  if (err)
    fy_warn(MOD, "group %s: %s", op->c->group, e->errtext);
  if (--op->outstanding == 0 && op->ready)
    start_go(op);
}

static void life_start(struct life_op *op) {
  fy_push_consumer *c = op->c;
  fy_client *cl = c->cl;
  c->state = PC_RUNNING;
  c->loop_refs = 1; /* open: dropped when FINAL completes */
  uv_timer_init(&cl->loop, &c->tick);
  uv_timer_init(&cl->loop, &c->commit);
  uv_async_init(&cl->loop, &c->wake, on_wake);
  c->tick.data = c->commit.data = c->wake.data = c;
  c->loop_refs += 3;
  uv_timer_start(&c->tick, on_tick, c->cfg.group_check_interval_ms,
                 c->cfg.group_check_interval_ms);
  uv_timer_start(&c->commit, on_commit_timer, c->cfg.commit_interval_ms,
                 c->cfg.commit_interval_ms);
  c->next = cl->consumers;
  cl->consumers = c;
  op->outstanding = 1;
  for (size_t i = 0; i < c->nsubs; i++) {
    struct fy__rentry *e = fy__route_entry(cl, c->subs[i].topic);
    if (e)
      e->pins++;
    op->outstanding++;
    if (fy__route_get(&op->base, c->subs[i].topic, true, on_start_route))
      op->outstanding--;
  }
  op->ready = true;
  if (--op->outstanding == 0)
    start_go(op);
}

static void on_final_reply(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct life_op *op = (struct life_op *)base;
  if (!err)
    err = fy__cl_status_err(resp->status);
  if (err && ctx)
    fy_warn(MOD, "closing: %s: %s", (const char *)ctx, fy_client_strerror(err));
  if (--op->outstanding == 0)
    fy__op_complete(base, 0);
}

static void life_final(struct life_op *op) {
  fy_push_consumer *c = op->c;
  fy_client *cl = c->cl;
  op->outstanding = 1;
  /* Final offsets: the consume threads have stopped. */
  for (struct fy__pq *pq = c->pqs; pq; pq = pq->next) {
    pthread_mutex_lock(&c->mu);
    bool known = pq->offset_known;
    uint64_t off = pq_commit_offset_locked(pq);
    pthread_mutex_unlock(&c->mu);
    if (!known)
      continue;
    if (c->cfg.model == FY_BROADCASTING) {
      char key[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 16];
      fy_strmap_put(c->local, key, local_key(&pq->q, key, sizeof key),
                    (void *)(uintptr_t)(off + 1));
      c->local_dirty = true;
      continue;
    }
    const struct fy__route *r = pq_route(pq);
    uint64_t id;
    const char *addr = r ? fy__route_admin_addr(pq->c->cl, r, pq->q.broker_name, &id) : NULL;
    if (!addr)
      continue;
    Ferry__V1__QueueOffsetRequest req = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
    req.group = c->group;
    req.topic = pq->q.topic;
    req.queue_id = pq->q.queue_id;
    req.offset = off;
    if (fy__op_call(&op->base, addr, FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET, &req.base, NULL, 0,
                    0, on_final_reply, "offset commit") == 0)
      op->outstanding++;
  }
  if (c->cfg.model == FY_BROADCASTING)
    local_write(c);
  /* UNREGISTER_CLIENT to every broker of the subscribed topics. */
  fy_strmap *addrs = fy_strmap_new();
  if (addrs)
    pc_addrs(c, addrs);
  /* Unlink from the heartbeat list. */
  for (fy_push_consumer **pp = &cl->consumers; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  Ferry__V1__UnregisterClientRequest ureq = FERRY__V1__UNREGISTER_CLIENT_REQUEST__INIT;
  ureq.client_id = cl->client_id;
  ureq.consumer_group = c->group;
  ureq.producer_group = "";
  size_t pos = 0;
  const char *k;
  size_t kl;
  void *v;
  while (addrs && fy_strmap_next(addrs, &pos, &k, &kl, &v))
    if (fy__op_call(&op->base, v, FERRY__V1__OP__OP_UNREGISTER_CLIENT, &ureq.base, NULL, 0, 0,
                    on_final_reply, "unregister") == 0)
      op->outstanding++;
  if (addrs)
    fy_strmap_free(addrs);
  for (size_t i = 0; i < c->nsubs; i++) {
    struct fy__rentry *e = fy__route_entry(cl, c->subs[i].topic);
    if (e && e->pins)
      e->pins--;
  }
  while (c->pqs)
    pq_drop(c->pqs);
  c->state = PC_CLOSED;
  uv_timer_stop(&c->tick);
  uv_timer_stop(&c->commit);
  uv_close((uv_handle_t *)&c->tick, on_handle_closed);
  uv_close((uv_handle_t *)&c->commit, on_handle_closed);
  uv_close((uv_handle_t *)&c->wake, on_handle_closed);
  if (--op->outstanding == 0)
    fy__op_complete(&op->base, 0);
}

static void life_start_fn(struct fy__op *base) {
  struct life_op *op = (struct life_op *)base;
  switch (op->kind) {
  case LIFE_START: life_start(op); break;
  case LIFE_STOP:
    op->c->state = PC_STOPPING;
    uv_timer_stop(&op->c->tick);
    uv_timer_stop(&op->c->commit);
    fy__op_complete(base, 0);
    break;
  case LIFE_FINAL: life_final(op); break;
  }
}

static void life_finish(struct fy__op *base) {
  struct life_op *op = (struct life_op *)base;
  if (op->kind == LIFE_FINAL)
    pc_unref(op->c); /* the open reference; may free c now or after late answers */
}

static int life_run(fy_push_consumer *c, int kind) {
  struct life_op *op = calloc(1, sizeof *op);
  if (!op)
    return -ENOMEM;
  fy__op_init(&op->base, c->cl, c->cl->cfg.timeout_ms, true, life_start_fn, life_finish, NULL);
  op->base.must_run = true;
  op->c = c;
  op->kind = kind;
  int err = fy__op_post(&op->base);
  if (err)
    return err;
  err = fy__op_wait_forever(&op->base);
  fy__op_unref(&op->base);
  return err;
}

/* ------------------------------------------------------------------- public */

int fy_push_consumer_new(fy_client *cl, const fy_push_config *cfg, fy_push_consumer **out) {
  if (!cfg || !cfg->listener) {
    fy__set_last_error("a consumer group and a listener are required");
    return -EINVAL;
  }
  if (fy__cl_name_check("consumer group", cfg->group, FY_CLIENT_GROUP_MAX))
    return -EINVAL;
  fy_push_consumer *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->cl = cl;
  c->cfg = *cfg;
  snprintf(c->group, sizeof c->group, "%s", cfg->group);
  c->cfg.group = c->group;
  fy_push_config *f = &c->cfg;
  if (!f->from_timestamp_ms)
    f->from_timestamp_ms = fy__cl_wall_ms() - 30 * 60 * 1000;
  if (!f->consume_threads)
    f->consume_threads = 20;
  if (f->consume_threads > 1000)
    f->consume_threads = 1000;
  if (!f->consume_batch_max)
    f->consume_batch_max = 1;
  if (f->consume_batch_max > 1024)
    f->consume_batch_max = 1024;
  if (!f->pull_batch_size)
    f->pull_batch_size = 32;
  if (f->pull_batch_size > 1024)
    f->pull_batch_size = 1024;
  if (!f->queue_buffer_max_msgs)
    f->queue_buffer_max_msgs = 1000;
  if (!f->queue_buffer_max_bytes)
    f->queue_buffer_max_bytes = 100u << 20;
  if (!f->suspend_timeout_ms)
    f->suspend_timeout_ms = 15000;
  if (!f->rebalance_interval_ms)
    f->rebalance_interval_ms = 20000;
  if (!f->group_check_interval_ms)
    f->group_check_interval_ms = 2000;
  if (f->group_check_interval_ms > f->rebalance_interval_ms)
    f->group_check_interval_ms = f->rebalance_interval_ms;
  if (!f->commit_interval_ms)
    f->commit_interval_ms = 5000;
  if (!f->retry_delay_ms)
    f->retry_delay_ms = 1000;
  f->offset_store_dir = NULL;
  if (cfg->model == FY_BROADCASTING) {
    const char *dir = cfg->offset_store_dir;
    char def[PATH_MAX];
    if (!dir || !*dir) {
      const char *home = getenv("HOME");
      snprintf(def, sizeof def, "%s/.ferry_offsets", home && *home ? home : ".");
      dir = def;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
      fy__set_last_error("cannot create offset directory %s: %s", dir, strerror(errno));
      free(c);
      return -errno;
    }
    int n = snprintf(c->offset_path, sizeof c->offset_path, "%s/%s@%s.offsets", dir, c->group,
                     cl->instance_name[0] ? cl->instance_name : "default");
    if (n < 0 || (size_t)n >= sizeof c->offset_path) {
      fy__set_last_error("offset directory path too long");
      free(c);
      return -ENAMETOOLONG;
    }
  }
  c->local = fy_strmap_new();
  if (!c->local) {
    free(c);
    return -ENOMEM;
  }
  if (cfg->model == FY_BROADCASTING) {
    int err = local_load(c);
    if (err) {
      fy__set_last_error("cannot read %s: %s", c->offset_path, strerror(-err));
      fy_strmap_free(c->local);
      free(c);
      return err;
    }
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &a);
  pthread_condattr_destroy(&a);
  pthread_mutex_lock(&cl->mu);
  c->all_next = cl->all_push;
  cl->all_push = c;
  pthread_mutex_unlock(&cl->mu);
  *out = c;
  return 0;
}

int fy_push_consumer_subscribe(fy_push_consumer *c, const char *topic, const char *expression) {
  if (c->state != PC_NEW) {
    fy__set_last_error("subscribe before fy_push_consumer_start");
    return -EINVAL;
  }
  if (c->nsubs == FY__SUBS_MAX) {
    fy__set_last_error("at most %d topics per consumer", FY__SUBS_MAX);
    return -EINVAL;
  }
  if (fy__cl_name_check("topic", topic, FY_CLIENT_TOPIC_MAX))
    return -EINVAL;
  struct fy__sub *s = &c->subs[c->nsubs];
  int err = fy__sub_parse(s, topic, expression);
  if (err) {
    fy__set_last_error("bad tag expression '%s': expected 'TagA || TagB' or '*'",
                       expression ? expression : "");
    return err;
  }
  for (size_t i = 0; i < c->nsubs; i++)
    if (!strcmp(c->subs[i].topic, s->topic)) {
      fy__set_last_error("topic %s subscribed twice", s->topic);
      return -EINVAL;
    }
  c->nsubs++;
  return 0;
}

static void threads_stop(fy_push_consumer *c) {
  pthread_mutex_lock(&c->mu);
  c->stop_threads = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < c->nthreads; i++)
    pthread_join(c->threads[i], NULL);
  c->nthreads = 0;
}

int fy_push_consumer_start(fy_push_consumer *c) {
  if (c->state != PC_NEW || c->nsubs == 0) {
    fy__set_last_error(c->nsubs ? "already started" : "subscribe to a topic first");
    return -EINVAL;
  }
  if (fy__on_loop(c->cl)) {
    fy__set_last_error("fy_push_consumer_start called on the client thread");
    return -EDEADLK;
  }
  c->threads = calloc(c->cfg.consume_threads, sizeof *c->threads);
  if (!c->threads)
    return -ENOMEM;
  for (size_t i = 0; i < c->cfg.consume_threads; i++) {
    int err = pthread_create(&c->threads[i], NULL, consume_main, c);
    if (err) {
      threads_stop(c);
      return -err;
    }
    c->nthreads++;
  }
  int err = life_run(c, LIFE_START);
  if (err) {
    fy__set_last_error("start: %s", fy_client_strerror(err));
    /* START ran: the consumer is registered; close it the normal way. */
    if (c->state == PC_RUNNING)
      return err;
    threads_stop(c);
  }
  return err;
}

int fy_push_consumer_close(fy_push_consumer *c) {
  if (!c)
    return 0;
  fy_client *cl = c->cl;
  for (size_t i = 0; i < c->nthreads; i++)
    if (pthread_equal(pthread_self(), c->threads[i])) {
      fy__set_last_error("fy_push_consumer_close called from its own listener");
      return -EDEADLK;
    }
  if (fy__on_loop(cl)) {
    fy__set_last_error("fy_push_consumer_close called on the client thread");
    return -EDEADLK;
  }
  pthread_mutex_lock(&cl->mu);
  for (fy_push_consumer **pp = &cl->all_push; *pp; pp = &(*pp)->all_next)
    if (*pp == c) {
      *pp = c->all_next;
      break;
    }
  pthread_mutex_unlock(&cl->mu);
  if (c->state == PC_NEW) {
    threads_stop(c);
    pc_free(c);
    return 0;
  }
  int err;
  while ((err = life_run(c, LIFE_STOP)) == -FY_EBUSY)
    ;
  threads_stop(c);
  if (err == -FY_ECLOSED) {
    /* The client is shutting down: its loop will not run FINAL. The loop
     * may still hold references (handles); they go with the loop. */
    return err;
  }
  while ((err = life_run(c, LIFE_FINAL)) == -FY_EBUSY)
    ;
  return err;
}

/* ------------------------------------------------------------------- owned */

struct owned_op {
  struct fy__op base;
  fy_push_consumer *c;
  fy_owned_queues *result;
};

static void owned_start(struct fy__op *base) {
  struct owned_op *op = (struct owned_op *)base;
  fy_push_consumer *c = op->c;
  struct fy__arena *a;
  fy_owned_queues *r = fy__result_new(sizeof *r, (c->npqs + 1) * sizeof(fy_owned_queue), &a);
  fy_owned_queue *qs = r ? fy__cl_arena_alloc(a, (c->npqs + 1) * sizeof *qs) : NULL;
  if (!qs) {
    fy_result_free(r);
    fy__op_complete(base, -ENOMEM);
    return;
  }
  size_t n = 0;
  for (struct fy__pq *pq = c->pqs; pq; pq = pq->next) {
    qs[n].queue = pq->q;
    pthread_mutex_lock(&c->mu);
    qs[n].commit_offset = pq->offset_known ? pq_commit_offset_locked(pq) : 0;
    qs[n].buffered_msgs = pq->count;
    pthread_mutex_unlock(&c->mu);
    n++;
  }
  r->n = n;
  r->queues = qs;
  op->result = r;
  fy__op_complete(base, 0);
}

static void owned_destroy(struct fy__op *base) {
  fy_result_free(((struct owned_op *)base)->result);
}

int fy_push_consumer_owned(fy_push_consumer *c, fy_owned_queues **out) {
  if (c->state == PC_NEW) {
    struct fy__arena *a;
    fy_owned_queues *r = fy__result_new(sizeof *r, 0, &a);
    if (!r)
      return -ENOMEM;
    *out = r;
    return 0;
  }
  struct owned_op *op = calloc(1, sizeof *op);
  if (!op)
    return -ENOMEM;
  fy__op_init(&op->base, c->cl, 0, true, owned_start, NULL, owned_destroy);
  op->base.must_run = true;
  op->c = c;
  int err = fy__op_post(&op->base);
  if (err)
    return err;
  err = fy__op_wait_forever(&op->base);
  if (!err) {
    *out = op->result;
    op->result = NULL;
  }
  fy__op_unref(&op->base);
  return err;
}
