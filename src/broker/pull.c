/*
 * PULL and long polling.
 *
 * A pull reads up to max_msgs records of one queue from the store and
 * answers with the records' bytes straight from the commit log's mapped
 * segments (pinned until the socket write completes). When there is nothing
 * new and the client asked to wait (suspend_ms > 0), the pull is held:
 *
 *   held --(a message arrives for its queue at or past its offset)--> answered
 *   held --(deadline passes)--> answered (usually PULL_NOT_FOUND)
 *   held --(connection closes)--> dropped
 *
 * Held pulls are indexed three ways: per queue (woken by the store's
 * arrival callback), per connection (dropped when it closes), and in a
 * min-heap by deadline served by one timer armed for the earliest deadline,
 * so idle long polls cost no CPU. At most maxHeldPulls are held; beyond
 * that a pull is answered PULL_NOT_FOUND at once.
 */
#include "broker/broker_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

#define MOD "pull"

static void on_deadline(uv_timer_t *t);

/* ---------------------------------------------------------------- heap */

static void heap_swap(struct fy_broker *b, size_t i, size_t j) {
  struct held_pull *t = b->heap[i];
  b->heap[i] = b->heap[j];
  b->heap[j] = t;
  b->heap[i]->heap_idx = i;
  b->heap[j]->heap_idx = j;
}

static void heap_up(struct fy_broker *b, size_t i) {
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (b->heap[parent]->deadline_ms <= b->heap[i]->deadline_ms)
      break;
    heap_swap(b, i, parent);
    i = parent;
  }
}

static void heap_down(struct fy_broker *b, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < b->nheld && b->heap[l]->deadline_ms < b->heap[m]->deadline_ms)
      m = l;
    if (r < b->nheld && b->heap[r]->deadline_ms < b->heap[m]->deadline_ms)
      m = r;
    if (m == i)
      return;
    heap_swap(b, i, m);
    i = m;
  }
}

static void heap_remove(struct fy_broker *b, struct held_pull *h) {
  size_t i = h->heap_idx;
  fy_assert(i < b->nheld && b->heap[i] == h);
  b->nheld--;
  if (i != b->nheld) {
    b->heap[i] = b->heap[b->nheld];
    b->heap[i]->heap_idx = i;
    heap_down(b, i);
    heap_up(b, i);
  }
}

static void arm_timer(struct fy_broker *b) {
  if (b->stopping)
    return;
  if (b->nheld == 0) {
    uv_timer_stop(&b->poll_timer);
    return;
  }
  uint64_t now = uv_now(b->loop);
  uint64_t at = b->heap[0]->deadline_ms;
  uv_timer_start(&b->poll_timer, on_deadline, at > now ? at - now : 0, 0);
}

/* ---------------------------------------------------------------- held pulls */

static size_t queue_key(char *buf, const char *topic, size_t tlen, uint32_t qid) {
  memcpy(buf, topic, tlen);
  buf[tlen] = '\0';
  memcpy(buf + tlen + 1, &qid, 4);
  return tlen + 5;
}

/* Takes h out of every index; the caller answers or frees it. */
static void unhold(struct fy_broker *b, struct held_pull *h) {
  heap_remove(b, h);
  if (h->q_prev)
    h->q_prev->q_next = h->q_next;
  else
    h->hq->head = h->q_next;
  if (h->q_next)
    h->q_next->q_prev = h->q_prev;
  if (!h->hq->head) {
    char key[FY_TOPIC_NAME_MAX + 8];
    free(fy_strmap_del(b->held_queues, key,
                       queue_key(key, h->r.topic, strlen(h->r.topic), h->r.queue_id)));
  }
  if (h->c_prev)
    h->c_prev->c_next = h->c_next;
  else
    h->bc->held = h->c_next;
  if (h->c_next)
    h->c_next->c_prev = h->c_prev;
}

static bool hold(struct fy_broker *b, struct bconn *bc, const struct pull_req *r) {
  if (b->nheld >= b->cfg->max_held_pulls)
    return false;
  char key[FY_TOPIC_NAME_MAX + 8];
  size_t klen = queue_key(key, r->topic, strlen(r->topic), r->queue_id);
  struct held_queue *hq = fy_strmap_get(b->held_queues, key, klen);
  if (!hq) {
    hq = calloc(1, sizeof *hq);
    if (!hq || fy_strmap_put(b->held_queues, key, klen, hq)) {
      free(hq);
      return false;
    }
  }
  struct held_pull *h = calloc(1, sizeof *h);
  if (!h) {
    if (!hq->head)
      free(fy_strmap_del(b->held_queues, key, klen));
    return false;
  }
  h->r = *r;
  h->bc = bc;
  h->hq = hq;
  h->deadline_ms = uv_now(b->loop) + r->suspend_ms;
  h->q_next = hq->head;
  if (hq->head)
    hq->head->q_prev = h;
  hq->head = h;
  h->c_next = bc->held;
  if (bc->held)
    bc->held->c_prev = h;
  bc->held = h;
  h->heap_idx = b->nheld;
  b->heap[b->nheld++] = h;
  heap_up(b, h->heap_idx);
  b->pulls_held++;
  arm_timer(b);
  return true;
}

void fy__pulls_conn_closed(struct bconn *bc) {
  struct fy_broker *b = bc->b;
  while (bc->held) {
    struct held_pull *h = bc->held;
    unhold(b, h);
    free(h);
  }
  arm_timer(b);
}

/* ---------------------------------------------------------------- answering */

struct pinned {
  struct fy_get_msg *msgs;
  size_t count;
};

static void on_pull_sent(void *arg, int status) {
  (void)status;
  struct pinned *pin = arg;
  fy_store_get_release(pin->msgs, pin->count);
  free(pin->msgs);
  free(pin);
}

uint64_t fy__pull_suggest(struct fy_broker *b, const struct pull_req *r,
                          const struct fy_get_result *res) {
  if (b->cfg->role == FY_ROLE_SLAVE) {
    /* A slave keeps a consumer that is still far behind; once it has
     * caught up, it sends the consumer back to the master. */
    if (res->count && res->behind_bytes > b->slave_read_threshold)
      return b->cfg->broker_id;
    return 0;
  }
  if (!b->cfg->slave_read_enable)
    return 0;
  struct fy_group_config g;
  if (fy_groups_get(b->groups, r->group, &g) != 0)
    fy_group_config_default(&g, r->group);
  if (res->count && res->behind_bytes > b->slave_read_threshold)
    return g.which_broker_when_consume_slowly;
  return g.broker_id;
}

static void reply_status(struct fy_broker *b, struct bconn *bc, const struct pull_req *r,
                         uint16_t status, const struct fy_get_result *res_in) {
  struct fy_get_result fixed = *res_in;
  const struct fy_get_result *res = &fixed;
  /* A slave never moves a consumer's offset (RocketMQ's nextOffsetCorrection
   * rule): it may simply be behind its master, and sending the consumer back
   * to the slave's end would deliver again what it already has. */
  if (b->cfg->role == FY_ROLE_SLAVE &&
      (fixed.status == FY_GET_NO_NEW || fixed.status == FY_GET_NO_QUEUE ||
       fixed.status == FY_GET_OFFSET_TOO_SMALL || fixed.status == FY_GET_OFFSET_OVERFLOW))
    fixed.next_offset = r->offset;
  if (r->ref.proto == FY_PROTO_RMQ) {
    fy__rmq_reply_pull(b, bc, r, status, res, NULL);
    return;
  }
  Ferry__V1__PullResponse resp = FERRY__V1__PULL_RESPONSE__INIT;
  resp.next_offset = res->next_offset;
  resp.min_offset = res->min_offset;
  resp.max_offset = res->max_offset;
  resp.suggest_broker_id = fy__pull_suggest(b, r, res);
  fy_conn_reply(bc->conn, r->ref.id, FERRY__V1__OP__OP_PULL, status, &resp.base, NULL, 0, NULL,
                NULL);
}

/* Runs the pull; holds it when there is nothing and waiting is allowed. */
static void execute(struct fy_broker *b, struct bconn *bc, const struct pull_req *r,
                    bool may_hold) {
  struct fy_get_result res;
  struct fy_get_msg *msgs = calloc(r->max_msgs, sizeof *msgs);
  if (!msgs) {
    fy__reply_err(bc->conn, &r->ref, FERRY__V1__STATUS__SYSTEM_BUSY, "out of memory");
    return;
  }
  fy_store_get(b->store, r->topic, r->queue_id, r->offset, r->max_msgs, r->max_bytes, r->tags,
               r->ntags, msgs, &res);
  if (res.status == FY_GET_FOUND && r->ref.proto == FY_PROTO_RMQ) {
    b->pulled_msgs += res.count;
    fy__rmq_reply_pull(b, bc, r, FERRY__V1__STATUS__OK, &res, msgs);
    return;
  }
  if (res.status == FY_GET_FOUND) {
    struct pinned *pin = malloc(sizeof *pin);
    uv_buf_t *bufs = malloc(res.count * sizeof *bufs);
    if (!pin || !bufs) {
      free(pin);
      free(bufs);
      fy_store_get_release(msgs, res.count);
      free(msgs);
      fy__reply_err(bc->conn, &r->ref, FERRY__V1__STATUS__SYSTEM_BUSY, "out of memory");
      return;
    }
    for (size_t i = 0; i < res.count; i++)
      bufs[i] = uv_buf_init((char *)msgs[i].slice.data, (unsigned)msgs[i].slice.len);
    pin->msgs = msgs;
    pin->count = res.count;
    Ferry__V1__PullResponse resp = FERRY__V1__PULL_RESPONSE__INIT;
    resp.next_offset = res.next_offset;
    resp.min_offset = res.min_offset;
    resp.max_offset = res.max_offset;
    resp.suggest_broker_id = fy__pull_suggest(b, r, &res);
    resp.count = (uint32_t)res.count;
    int err = fy_conn_reply(bc->conn, r->ref.id, FERRY__V1__OP__OP_PULL, FERRY__V1__STATUS__OK,
                            &resp.base, bufs, (unsigned)res.count, on_pull_sent, pin);
    free(bufs);
    if (err)
      on_pull_sent(pin, err);
    b->pulled_msgs += res.count;
    return;
  }
  free(msgs);
  switch (res.status) {
  case FY_GET_NO_MATCHED:
    reply_status(b, bc, r, FERRY__V1__STATUS__PULL_RETRY_IMMEDIATELY, &res);
    return;
  case FY_GET_NO_NEW:
  case FY_GET_NO_QUEUE:
    if (may_hold && r->suspend_ms > 0 && b->cfg->long_polling && hold(b, bc, r))
      return;
    reply_status(b, bc, r, FERRY__V1__STATUS__PULL_NOT_FOUND, &res);
    return;
  case FY_GET_OFFSET_TOO_SMALL:
  case FY_GET_OFFSET_OVERFLOW:
  default:
    /* A slave never moves a consumer's offset (RocketMQ's rule). */
    reply_status(b, bc, r,
                 b->cfg->role == FY_ROLE_SLAVE ? FERRY__V1__STATUS__PULL_RETRY_IMMEDIATELY
                                               : FERRY__V1__STATUS__PULL_OFFSET_MOVED,
                 &res);
    return;
  }
}

/* ---------------------------------------------------------------- requests */

uint16_t fy__pull_check(struct fy_broker *b, const char *topic, const char *group,
                        uint32_t queue_id, char *why, size_t whylen) {
  const char *reason = NULL;
  struct fy_topic_config tc;
  bool known = fy_topic_name_check(topic, &reason) == 0 && fy_topics_get(b->topics, topic, &tc) == 0;
  if (!known && !reason && b->cfg->role == FY_ROLE_SLAVE) {
    /* A slave serves what it holds, even before the topic's config has
     * arrived from the master (the master may be gone for good). */
    memset(&tc, 0, sizeof tc);
    tc.read_queues = tc.write_queues = FY_TOPIC_QUEUES_LIMIT;
    tc.perm = FY_PERM_READ;
    known = true;
  }
  if (!known) {
    snprintf(why, whylen, "topic '%s' does not exist on broker %s", topic, b->cfg->broker_name);
    return FERRY__V1__STATUS__TOPIC_NOT_EXIST;
  }
  if (fy_group_name_check(group, &reason)) {
    snprintf(why, whylen, "consumer group '%s': %s", group, reason ? reason : "invalid");
    return FERRY__V1__STATUS__BAD_REQUEST;
  }
  /* The subscription group (RocketMQ's PullMessageProcessor): a master
   * creates it on first use when autoCreateSubscriptionGroup allows; a
   * slave only reads the table it copies from the master, and serves a
   * group it does not hold yet, as it does topics. */
  struct fy_group_config gc;
  int gerr = b->cfg->role == FY_ROLE_SLAVE ? fy_groups_get(b->groups, group, &gc)
                                           : fy_groups_find_or_create(b->groups, group, &gc, NULL);
  if (gerr == -FY_ENOT_FOUND && b->cfg->role != FY_ROLE_SLAVE) {
    snprintf(why, whylen,
             "subscription group [%s] does not exist on broker %s "
             "(autoCreateSubscriptionGroup=false: create it with mqadmin updateSubGroup)",
             group, b->cfg->broker_name);
    return FERRY__V1__STATUS__CONSUMER_GROUP_NOT_EXIST;
  }
  if (gerr < 0 && gerr != -FY_ENOT_FOUND) {
    snprintf(why, whylen, "subscription group [%s] cannot be created on broker %s: %s", group,
             b->cfg->broker_name,
             gerr == -ENOSPC ? "too many subscription groups" : fy_strerror(gerr));
    return FERRY__V1__STATUS__SYSTEM_ERROR;
  }
  if (gerr == 0 && !gc.consume_enable) {
    snprintf(why, whylen, "subscription group no permission, %s (consumeEnable=false on broker %s)",
             group, b->cfg->broker_name);
    return FERRY__V1__STATUS__NO_PERMISSION;
  }
  if (queue_id >= tc.read_queues) {
    snprintf(why, whylen, "queue %u of topic '%s' does not exist (read queues: %u)", queue_id,
             topic, tc.read_queues);
    return FERRY__V1__STATUS__BAD_REQUEST;
  }
  if (!(tc.perm & FY_PERM_READ)) {
    snprintf(why, whylen, "topic '%s' is not readable", topic);
    return FERRY__V1__STATUS__NO_PERMISSION;
  }
  if (!(b->cfg->broker_permission & FY_PERM_READ)) {
    snprintf(why, whylen, "broker %s is not readable (brokerPermission=%u)", b->cfg->broker_name,
             b->cfg->broker_permission);
    return FERRY__V1__STATUS__NO_PERMISSION;
  }
  return 0;
}

void fy__pull_limits(struct fy_broker *b, struct pull_req *r, uint32_t max_msgs,
                     uint32_t max_bytes, uint32_t suspend_ms) {
  r->max_msgs = max_msgs == 0 || max_msgs > b->cfg->pull_max_msgs ? b->cfg->pull_max_msgs
                                                                   : max_msgs;
  r->max_bytes = max_bytes == 0 || max_bytes > b->cfg->pull_max_bytes ? b->cfg->pull_max_bytes
                                                                      : max_bytes;
  r->suspend_ms = suspend_ms > 60000 ? 60000 : suspend_ms;
}

static bool decode(struct fy_broker *b, fy_conn *conn, const fy_frame *f, struct pull_req *r) {
  Ferry__V1__PullRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__pull_request__descriptor, (ProtobufCMessage **)&req)) {
    fy__reply_decode_error(conn, f);
    return false;
  }
  bool ok = false;
  char why[512];
  memset(r, 0, sizeof *r);
  uint16_t st = fy__pull_check(b, req->topic, req->consumer_group, req->queue_id, why, sizeof why);
  if (st) {
    fy_conn_reply_error(conn, f->request_id, f->op, st, "%s", why);
  } else if (req->n_tag_hashes > FY_PULL_TAGS_MAX) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "at most %d tags per subscription", FY_PULL_TAGS_MAX);
  } else {
    r->ref = (struct fy_reqref){.proto = FY_PROTO_NATIVE, .op = f->op, .id = f->request_id};
    snprintf(r->group, sizeof r->group, "%s", req->consumer_group);
    snprintf(r->topic, sizeof r->topic, "%s", req->topic);
    r->queue_id = req->queue_id;
    r->offset = req->queue_offset;
    fy__pull_limits(b, r, req->max_msgs, req->max_bytes, req->suspend_timeout_ms);
    for (size_t i = 0; i < req->n_tag_hashes; i++)
      r->tags[i] = req->tag_hashes[i];
    r->ntags = req->n_tag_hashes;
    if (req->has_commit_offset && b->cfg->role != FY_ROLE_SLAVE)
      fy_offsets_commit(b->offsets, r->group, r->topic, r->queue_id, (int64_t)req->commit_offset);
    ok = true;
  }
  fy_pb_free(&req->base);
  return ok;
}

/* An admin's resetOffsetByTime is handed to the group's next pull of each queue. */
static bool take_reset(struct fy_broker *b, const struct pull_req *r, uint64_t *offset) {
  if (fy_strmap_size(b->resets) == 0)
    return false;
  char key[600];
  int n = snprintf(key, sizeof key, "%s%c%s%c%u", r->group, 0, r->topic, 0, r->queue_id);
  uint64_t *v = fy_strmap_del(b->resets, key, (size_t)n);
  if (!v)
    return false;
  *offset = *v;
  free(v);
  return true;
}

int fy__reset_set(struct fy_broker *b, const char *group, const char *topic, uint32_t qid,
                  uint64_t offset) {
  char key[600];
  int n = snprintf(key, sizeof key, "%s%c%s%c%u", group, 0, topic, 0, qid);
  if (fy_strmap_size(b->resets) >= 100000)
    return -FY_EBUSY;
  uint64_t *v = fy_strmap_get(b->resets, key, (size_t)n);
  if (!v) {
    v = malloc(sizeof *v);
    if (!v || fy_strmap_put(b->resets, key, (size_t)n, v)) {
      free(v);
      return -ENOMEM;
    }
  }
  *v = offset;
  return 0;
}

void fy__pull_run(struct fy_broker *b, struct bconn *bc, const struct pull_req *r) {
  b->pulls++;
  uint64_t reset;
  if (take_reset(b, r, &reset)) {
    struct fy_get_result res = {.next_offset = reset,
                                .min_offset = fy_store_min_offset(b->store, r->topic, r->queue_id),
                                .max_offset = fy_store_max_offset(b->store, r->topic, r->queue_id)};
    reply_status(b, bc, r, FERRY__V1__STATUS__PULL_OFFSET_MOVED, &res);
    return;
  }
  execute(b, bc, r, true);
}

void fy__handle_pull(struct fy_broker *b, struct bconn *bc, const fy_frame *f) {
  struct pull_req r;
  if (!decode(b, bc->conn, f, &r)) {
    b->pulls++;
    return;
  }
  fy__pull_run(b, bc, &r);
}

void fy__pull_on_arrival(void *arg, const char *topic, size_t topic_len, uint32_t queue_id,
                         uint64_t max_offset) {
  struct fy_broker *b = arg;
  if (topic_len == sizeof FY_SCHEDULE_TOPIC - 1 && memcmp(topic, FY_SCHEDULE_TOPIC, topic_len) == 0)
    fy__schedule_wake(b, queue_id);
  if (b->nheld == 0)
    return;
  char key[FY_TOPIC_NAME_MAX + 8];
  if (topic_len > FY_TOPIC_NAME_MAX)
    return;
  struct held_queue *hq = fy_strmap_get(b->held_queues, key, queue_key(key, topic, topic_len, queue_id));
  if (!hq)
    return;
  /* In rounds of up to 256: collect, then answer (answering may free the
   * queue entry, but never a pull not collected, so `next` stays valid).
   * Every pull held on the queue is looked at once. */
  for (struct held_pull *next = hq->head; next;) {
    struct held_pull *ready[256];
    size_t n = 0;
    for (; next && n < 256; next = next->q_next)
      if (next->r.offset < max_offset)
        ready[n++] = next;
    for (size_t i = 0; i < n; i++) {
      unhold(b, ready[i]);
      execute(b, ready[i]->bc, &ready[i]->r, false);
      free(ready[i]);
    }
  }
  arm_timer(b);
}

static void on_deadline(uv_timer_t *t) {
  struct fy_broker *b = t->data;
  uint64_t now = uv_now(b->loop);
  for (unsigned i = 0; i < 1024 && b->nheld && b->heap[0]->deadline_ms <= now; i++) {
    struct held_pull *h = b->heap[0];
    unhold(b, h);
    execute(b, h->bc, &h->r, false);
    free(h);
  }
  arm_timer(b);
}

int fy__pull_init(struct fy_broker *b) {
  b->held_queues = fy_strmap_new();
  b->heap = calloc(b->cfg->max_held_pulls, sizeof *b->heap);
  if (!b->held_queues || !b->heap)
    return -ENOMEM;
  uv_timer_init(b->loop, &b->poll_timer);
  b->poll_timer.data = b;
  return 0;
}

/* Drops every held pull (its connection is closing anyway) and closes the
 * timer; close_cb runs when the timer is closed. The indexes are freed by
 * fy__pull_free once no connection can refer to them. */
void fy__pull_close(struct fy_broker *b, uv_close_cb close_cb) {
  while (b->nheld) {
    struct held_pull *h = b->heap[0];
    unhold(b, h);
    free(h);
  }
  uv_timer_stop(&b->poll_timer);
  uv_close((uv_handle_t *)&b->poll_timer, close_cb);
}

void fy__pull_free(struct fy_broker *b) {
  free(b->heap);
  b->heap = NULL;
  fy_strmap_free(b->held_queues);
  b->held_queues = NULL;
}
