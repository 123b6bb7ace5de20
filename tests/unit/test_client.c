/* client against real name servers (in-process) and fake brokers
 * (fakebroker.c) on a server thread: route refresh and name-server
 * failover; send results, retries on another broker after SYSTEM_BUSY or
 * a closed connection, deadlines against brokers that never answer, many
 * async sends in flight; the pull consumer's slave redirect and fallback
 * when the master leaves the route, tag re-check, offsets; push consumers:
 * clustering rebalance and group changes, offsets committed periodically
 * and on close, flow control, redelivery, broadcasting with a local offset
 * file, consume-from rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fakebroker.c"
#include "ferry/client.h"
#include "testutil.h"

#define WAIT_MS 15000

#define WAIT_UNTIL(cond)                                                            \
  do {                                                                              \
    uint64_t t0_ = fy__cl_now_ms();                                                 \
    while (!(cond)) {                                                               \
      if (fy__cl_now_ms() - t0_ > WAIT_MS)                                          \
        fail_msg("timed out waiting for %s", #cond);                                \
      usleep(10000);                                                                \
    }                                                                               \
  } while (0)

static uint64_t now_ms(void) { return fy__cl_now_ms(); }

/* A port nothing listens on. */
static int dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  close(fd);
  return ntohs(a.sin_port);
}

static fy_client *client_for(const char *nsaddr, const char *instance) {
  fy_client_config cfg = {.namesrv_addr = nsaddr,
                          .instance_name = instance,
                          .timeout_ms = 2000,
                          .route_refresh_ms = 300,
                          .heartbeat_interval_ms = 500};
  fy_client *cl;
  assert_int_equal(fy_client_new(&cfg, &cl), 0);
  return cl;
}

static fy_client *client_on(struct senv *e, const char *instance) {
  char ns[64];
  snprintf(ns, sizeof ns, "127.0.0.1:%d", e->ns_port[0]);
  return client_for(ns, instance);
}

static fy_producer *producer(fy_client *cl, uint32_t max_inflight) {
  fy_producer_config pc = {.group = "PG", .max_inflight = max_inflight};
  fy_producer *p;
  assert_int_equal(fy_producer_new(cl, &pc, &p), 0);
  return p;
}

static fy_message msg(const char *topic, const char *body) {
  return (fy_message){.topic = topic, .body = body, .body_len = strlen(body), .tags = "TagA",
                      .keys = "k1"};
}

static size_t queues_of(fy_client *cl, const char *topic, bool writable) {
  fy_queue_list *l;
  int err = fy_client_topic_queues(cl, topic, writable, 0, &l);
  if (err)
    return 0;
  size_t n = l->n;
  fy_result_free(l);
  return n;
}

/* ------------------------------------------------------------------ routes */

static void stop_ns0(struct senv *e, void *arg) {
  (void)arg;
  fy_namesrv_stop(e->ns[0]);
  e->ns[0] = NULL;
}

static void test_route_refresh_and_ns_failover(void **state) {
  (void)state;
  struct senv *e = senv_start(2);
  struct fb *b = fb_add(e, "C1", "broker-a", 0, "TopicR", 4);

  /* The first name server in the list is down: the second answers. */
  char ns[128];
  snprintf(ns, sizeof ns, "127.0.0.1:%d;127.0.0.1:%d", dead_port(), e->ns_port[0]);
  fy_client *cl = client_for(ns, "r1");
  fy_queue_list *l;
  assert_int_equal(fy_client_topic_queues(cl, "TopicR", true, 0, &l), 0);
  assert_int_equal(l->n, 4);
  for (size_t i = 0; i < 4; i++) {
    assert_string_equal(l->queues[i].broker_name, "broker-a");
    assert_int_equal(l->queues[i].queue_id, i);
    assert_string_equal(l->queues[i].topic, "TopicR");
  }
  fy_result_free(l);

  /* Unknown topic: the name server's answer, not a failover. */
  assert_int_equal(fy_client_topic_queues(cl, "NoSuchTopic", true, 0, &l), -FY_ETOPIC_NOT_EXIST);
  assert_non_null(strstr(fy_client_last_error(), "NoSuchTopic"));

  /* Refresh: the broker now has 8 queues; the cached route follows. */
  fb_register(b, 8);
  WAIT_UNTIL(queues_of(cl, "TopicR", true) == 8);
  fy_client_close(cl);

  /* Both name servers alive; the first stops: refreshes go to the second. */
  snprintf(ns, sizeof ns, "127.0.0.1:%d;127.0.0.1:%d", e->ns_port[0], e->ns_port[1]);
  cl = client_for(ns, "r2");
  assert_int_equal(queues_of(cl, "TopicR", true), 8);
  senv_run(e, stop_ns0, NULL);
  fb_register(b, 6); /* reaches only the second name server now */
  WAIT_UNTIL(queues_of(cl, "TopicR", true) == 6);
  fy_client_close(cl);

  /* No name server at all: fails within the deadline, does not hang. */
  snprintf(ns, sizeof ns, "127.0.0.1:%d;127.0.0.1:%d", dead_port(), dead_port());
  cl = client_for(ns, "r3");
  uint64_t t0 = now_ms();
  int err = fy_client_topic_queues(cl, "TopicR", true, 1000, &l);
  assert_true(err < 0);
  assert_true(now_ms() - t0 < 2000);
  fy_client_close(cl);
  senv_stop(e);
}

/* -------------------------------------------------------------------- sends */

static size_t pick_two(const char *topic, size_t n, void *arg) {
  (void)topic;
  (void)arg;
  return 2 % n;
}

static void test_send_results(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "broker-a", 0, "TopicS", 4);
  fy_client *cl = client_on(e, "s1");
  fy_producer *p = producer(cl, 0);

  uint64_t next_off[4] = {0};
  for (int i = 0; i < 8; i++) {
    fy_message m = msg("TopicS", "hello");
    fy_send_result r;
    assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
    assert_int_equal(r.status, FY_SEND_OK);
    assert_string_equal(r.broker_name, "broker-a");
    assert_true(r.queue_id < 4);
    assert_true(r.queue_offset == next_off[r.queue_id]);
    next_off[r.queue_id]++;
    assert_int_equal(strlen(r.msg_id), 32);
    assert_int_equal(strlen(r.offset_msg_id), 32);
    char addr[64];
    uint64_t phys;
    assert_int_equal(fy__offset_msgid_decode(r.offset_msg_id, addr, sizeof addr, &phys), 0);
    assert_string_equal(addr, b->addr);
    assert_int_equal(r.attempts, 1);
  }
  for (int q = 0; q < 4; q++)
    assert_true(next_off[q] == 2); /* round-robin */

  /* stored on the master only: 0 with the status */
  atomic_store(&b->send_status, FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT);
  fy_message m = msg("TopicS", "x");
  fy_send_result r;
  assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
  assert_int_equal(r.status, FY_SEND_FLUSH_SLAVE_TIMEOUT);
  assert_int_equal(r.attempts, 1);
  atomic_store(&b->send_status, FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE);
  assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
  assert_int_equal(r.status, FY_SEND_SLAVE_NOT_AVAILABLE);
  atomic_store(&b->send_status, FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT);
  assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
  assert_int_equal(r.status, FY_SEND_FLUSH_DISK_TIMEOUT);
  assert_int_equal(r.attempts, 1); /* stored: not sent again */
  atomic_store(&b->send_status, 0);

  /* batch: one queue, consecutive offsets */
  fy_message batch[3] = {msg("TopicS", "b0"), msg("TopicS", "b1"), msg("TopicS", "b2")};
  fy_send_result rs[3];
  int before = atomic_load(&b->stored);
  assert_int_equal(fy_producer_send_batch(p, batch, 3, NULL, rs), 0);
  assert_int_equal(atomic_load(&b->stored), before + 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rs[i].queue_id, rs[0].queue_id);
    assert_true(rs[i].queue_offset == rs[0].queue_offset + (uint64_t)i);
  }
  assert_string_not_equal(rs[0].msg_id, rs[1].msg_id);
  fy_message mixed[2] = {msg("TopicS", "a"), msg("Other", "b")};
  assert_int_equal(fy_producer_send_batch(p, mixed, 2, NULL, rs), -EINVAL);

  /* selector */
  fy_send_options o = {.selector = pick_two};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(fy_producer_send(p, &m, &o, &r), 0);
    assert_int_equal(r.queue_id, 2);
  }

  /* refused before sending */
  char *big = calloc(1, (4u << 20) + 1);
  memset(big, 'x', 4u << 20);
  fy_message bm = {.topic = "TopicS", .body = big, .body_len = (4u << 20) + 1};
  assert_int_equal(fy_producer_send(p, &bm, NULL, &r), -FY_ETOO_BIG);
  free(big);
  fy_message bad = msg("TopicS", "x");
  bad.tags = "a\x01";
  assert_int_equal(fy_producer_send(p, &bad, NULL, &r), -EINVAL);
  fy_message badname = msg("Topic S", "x"); /* the broker would refuse it too */
  assert_int_equal(fy_producer_send(p, &badname, NULL, &r), -EINVAL);
  assert_non_null(strstr(fy_client_last_error(), "topic[Topic S] contains illegal characters"));
  fy_pull_consumer *pc;
  assert_int_equal(fy_pull_consumer_new(cl, "G/1", &pc), -EINVAL);
  assert_non_null(strstr(fy_client_last_error(), "consumer group[G/1]"));

  /* a topic nobody serves (no TBW102 either) */
  fy_message nt = msg("NoTopic", "x");
  assert_int_equal(fy_producer_send(p, &nt, NULL, &r), -FY_ETOPIC_NOT_EXIST);
  assert_int_equal(strlen(r.msg_id), 32);
  assert_true(r.error[0] != '\0');

  assert_int_equal(fy_producer_close(p), 0);
  fy_client_close(cl);
  senv_stop(e);
}

static void test_send_retry_other_broker(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *a = fb_add(e, "C1", "broker-a", 0, "TopicB", 2);
  struct fb *b = fb_add(e, "C1", "broker-b", 0, "TopicB", 2);
  fy_client *cl = client_on(e, "b1");
  fy_producer *p = producer(cl, 0);
  assert_int_equal(queues_of(cl, "TopicB", true), 4);

  /* broker-a busy: every send lands on broker-b, some after one retry */
  atomic_store(&a->send_mode, FB_SEND_BUSY);
  int retried = 0;
  for (int i = 0; i < 20; i++) {
    fy_message m = msg("TopicB", "m");
    fy_send_result r;
    assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
    assert_string_equal(r.broker_name, "broker-b");
    assert_true(r.attempts <= 2);
    retried += r.attempts == 2;
  }
  assert_true(retried > 0);
  assert_int_equal(atomic_load(&b->stored), 20);
  assert_int_equal(atomic_load(&a->stored), 0);
  assert_int_equal(atomic_load(&a->sends), retried);

  /* broker-a closes the connection on a send: same */
  atomic_store(&a->send_mode, FB_SEND_CLOSE);
  for (int i = 0; i < 10; i++) {
    fy_message m = msg("TopicB", "m");
    fy_send_result r;
    assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
    assert_string_equal(r.broker_name, "broker-b");
  }

  /* both busy: 3 attempts, then the broker's error, quickly */
  atomic_store(&a->send_mode, FB_SEND_BUSY);
  atomic_store(&b->send_mode, FB_SEND_BUSY);
  fy_message m = msg("TopicB", "m");
  fy_send_result r;
  uint64_t t0 = now_ms();
  assert_int_equal(fy_producer_send(p, &m, NULL, &r), -FY_EREMOTE_BUSY);
  assert_true(now_ms() - t0 < 1000);
  assert_int_equal(r.attempts, 3);
  assert_non_null(strstr(r.error, "SYSTEM_BUSY"));
  assert_non_null(strstr(fy_client_last_error(), "SYSTEM_BUSY"));

  /* one attempt only */
  fy_producer_config pc1 = {.group = "PG1", .max_attempts = 1};
  fy_producer *p1;
  assert_int_equal(fy_producer_new(cl, &pc1, &p1), 0);
  assert_int_equal(fy_producer_send(p1, &m, NULL, &r), -FY_EREMOTE_BUSY);
  assert_int_equal(r.attempts, 1);
  fy_producer_close(p1);

  fy_producer_close(p);
  fy_client_close(cl);
  senv_stop(e);
}

struct async_state {
  pthread_mutex_t mu;
  int done, failed, last_err;
  pthread_t main;
  bool on_main;
  uint64_t done_ms;
};

static void on_sent(int err, const fy_send_result *res, void *arg) {
  struct async_state *s = arg;
  pthread_mutex_lock(&s->mu);
  s->done++;
  if (err) {
    s->failed++;
    s->last_err = err;
  }
  if (pthread_equal(pthread_self(), s->main))
    s->on_main = true;
  s->done_ms = now_ms();
  assert_true(res != NULL && strlen(res->msg_id) == 32);
  pthread_mutex_unlock(&s->mu);
}

static int async_done(struct async_state *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->done;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static void test_deadlines(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *a = fb_add(e, "C1", "broker-a", 0, "TopicD", 2);
  struct fb *b = fb_add(e, "C1", "broker-b", 0, "TopicD", 2);
  atomic_store(&a->send_mode, FB_SEND_SILENT);
  atomic_store(&b->send_mode, FB_SEND_SILENT);
  fy_client *cl = client_on(e, "d1");
  fy_producer *p = producer(cl, 0);
  assert_int_equal(queues_of(cl, "TopicD", true), 4);

  /* sync send: never past its timeout */
  fy_message m = msg("TopicD", "m");
  fy_send_options o = {.timeout_ms = 400};
  fy_send_result r;
  uint64_t t0 = now_ms();
  assert_int_equal(fy_producer_send(p, &m, &o, &r), -FY_ETIMEOUT);
  uint64_t took = now_ms() - t0;
  assert_true(took >= 350 && took < 1000);

  /* async: the callback reports the timeout at the deadline */
  struct async_state s = {.mu = PTHREAD_MUTEX_INITIALIZER, .main = pthread_self()};
  t0 = now_ms();
  assert_int_equal(fy_producer_send_async(p, &m, &o, on_sent, &s), 0);
  WAIT_UNTIL(async_done(&s) == 1);
  assert_int_equal(s.last_err, -FY_ETIMEOUT);
  assert_true(s.done_ms - t0 >= 350 && s.done_ms - t0 < 1000);
  assert_false(s.on_main);

  /* a timed-out attempt had all the send's time: no retry after it (the rpc
   * timer, on the loop's cached clock, can fire just before the deadline) */
  enum { TIMED = 40 };
  uint64_t sent_before = atomic_load(&a->sends) + atomic_load(&b->sends);
  struct async_state st = {.mu = PTHREAD_MUTEX_INITIALIZER, .main = pthread_self()};
  fy_send_options o3 = {.timeout_ms = 150};
  for (int i = 0; i < TIMED; i++)
    assert_int_equal(fy_producer_send_async(p, &m, &o3, on_sent, &st), 0);
  WAIT_UNTIL(async_done(&st) == TIMED);
  assert_int_equal(st.failed, TIMED);
  assert_int_equal(atomic_load(&a->sends) + atomic_load(&b->sends) - sent_before, TIMED);

  /* an admin call to a broker that does not answer */
  t0 = now_ms();
  fy_kv_list *kv;
  assert_int_equal(fy_admin_broker_status(cl, a->addr, 300, &kv), -FY_ETIMEOUT);
  assert_true(now_ms() - t0 < 1300);

  /* a long-poll pull to a silent broker: its timeout */
  atomic_store(&a->pull_silent, 1);
  fy_pull_consumer *pc;
  assert_int_equal(fy_pull_consumer_new(cl, "G", &pc), 0);
  fy_queue q = {.topic = "TopicD", .broker_name = "broker-a", .queue_id = 0};
  fy_pull_options po = {.suspend_timeout_ms = 200, .timeout_ms = 500};
  fy_pull_result *pr;
  t0 = now_ms();
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &po, &pr), -FY_ETIMEOUT);
  assert_true(now_ms() - t0 < 1500);
  fy_pull_consumer_close(pc);

  /* closing with sends in flight: callbacks run (with errors), no hang */
  fy_send_options o2 = {.timeout_ms = 800};
  struct async_state s2 = {.mu = PTHREAD_MUTEX_INITIALIZER, .main = pthread_self()};
  for (int i = 0; i < 50; i++)
    assert_int_equal(fy_producer_send_async(p, &m, &o2, on_sent, &s2), 0);
  t0 = now_ms();
  fy_client_close(cl); /* closes the producer: waits for its sends */
  assert_true(now_ms() - t0 < 3000);
  assert_int_equal(s2.done, 50);
  assert_int_equal(s2.failed, 50);
  senv_stop(e);
}

static void test_async_many(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "broker-a", 0, "TopicA", 4);
  fy_client *cl = client_on(e, "a1");
  fy_producer *p = producer(cl, 500);
  struct async_state s = {.mu = PTHREAD_MUTEX_INITIALIZER, .main = pthread_self()};
  enum { N = 5000 };
  for (int i = 0; i < N; i++) {
    fy_message m = msg("TopicA", "payload");
    assert_int_equal(fy_producer_send_async(p, &m, NULL, on_sent, &s), 0);
  }
  WAIT_UNTIL(async_done(&s) == N);
  assert_int_equal(s.failed, 0);
  assert_false(s.on_main);
  assert_int_equal(atomic_load(&b->stored), N);
  assert_int_equal(fy_producer_close(p), 0);
  fy_client_close(cl);
  senv_stop(e);
}

/* More asynchronous sends in flight to one broker than its connection
 * takes calls (rpc_pending_max, 4096) wait on the client for room, in
 * order, instead of failing: a producer's max_inflight (10,000 by default)
 * may all go to one broker. */
static void test_async_more_than_a_connection_takes(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "broker-a", 0, "TopicA", 4);
  fy_client *cl = client_on(e, "a1");
  fy_producer *p = producer(cl, 10000);
  atomic_store(&b->send_mode, FB_SEND_HOLD);
  struct async_state s = {.mu = PTHREAD_MUTEX_INITIALIZER, .main = pthread_self()};
  enum { N = 9000 };
  fy_send_options o = {.timeout_ms = 20000};
  for (int i = 0; i < N; i++) {
    fy_message m = msg("TopicA", "payload");
    assert_int_equal(fy_producer_send_async(p, &m, &o, on_sent, &s), 0);
  }
  /* The broker gets what the connection takes; the rest wait, none fails. */
  WAIT_UNTIL(atomic_load(&b->sends) == 4096);
  usleep(200000);
  assert_int_equal(atomic_load(&b->sends), 4096);
  assert_int_equal(async_done(&s), 0);
  fb_release_sends(b);
  WAIT_UNTIL(async_done(&s) == N);
  assert_int_equal(s.failed, 0);
  assert_int_equal(atomic_load(&b->sends), N + 4096); /* the held ones count twice */
  assert_int_equal(atomic_load(&b->stored), N);
  assert_int_equal(fy_producer_close(p), 0);
  fy_client_close(cl);
  senv_stop(e);
}

/* Room on a full connection also comes from calls that time out: the
 * first 4096 sends (300 ms) fill the connection and time out unanswered,
 * and the sends queued behind them (20 s) then go out and succeed. */
static void test_async_room_from_timeouts(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "broker-a", 0, "TopicA", 4);
  fy_client *cl = client_on(e, "a1");
  fy_producer_config pc = {.group = "PG", .max_inflight = 10000};
  fy_producer *p;
  assert_int_equal(fy_producer_new(cl, &pc, &p), 0);
  atomic_store(&b->send_mode, FB_SEND_HOLD);
  struct async_state first = {.mu = PTHREAD_MUTEX_INITIALIZER, .main = pthread_self()};
  struct async_state later = {.mu = PTHREAD_MUTEX_INITIALIZER, .main = pthread_self()};
  enum { FIRST = 4096, LATER = 100 };
  fy_send_options short_o = {.timeout_ms = 300}, long_o = {.timeout_ms = 20000};
  for (int i = 0; i < FIRST; i++) {
    fy_message m = msg("TopicA", "payload");
    assert_int_equal(fy_producer_send_async(p, &m, &short_o, on_sent, &first), 0);
  }
  WAIT_UNTIL(atomic_load(&b->sends) == FIRST);
  for (int i = 0; i < LATER; i++) {
    fy_message m = msg("TopicA", "payload");
    assert_int_equal(fy_producer_send_async(p, &m, &long_o, on_sent, &later), 0);
  }
  WAIT_UNTIL(async_done(&first) == FIRST);
  assert_int_equal(first.failed, FIRST);
  assert_int_equal(first.last_err, -FY_ETIMEOUT);
  /* the timeouts made room: the later sends reach the broker */
  WAIT_UNTIL(atomic_load(&b->sends) == FIRST + LATER);
  assert_int_equal(async_done(&later), 0);
  fb_release_sends(b);
  WAIT_UNTIL(async_done(&later) == LATER);
  assert_int_equal(later.failed, 0);
  assert_int_equal(fy_producer_close(p), 0);
  fy_client_close(cl);
  senv_stop(e);
}

/* ------------------------------------------------------------ pull consumer */

static void test_pull_redirect_and_fallback(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *m = fb_add(e, "C1", "bk", 0, "TopicP", 1);
  struct fb *s = fb_add(e, "C1", "bk", 1, "TopicP", 1);
  fb_preload(m, 0, 10, true);
  fb_preload(s, 0, 10, true);
  atomic_store(&m->suggest, 1);
  atomic_store(&s->suggest, 1);
  fy_client *cl = client_on(e, "p1");
  fy_pull_consumer *pc;
  assert_int_equal(fy_pull_consumer_new(cl, "GP", &pc), 0);
  fy_queue q = {.topic = "TopicP", .broker_name = "bk", .queue_id = 0};
  fy_pull_options o = {.expression = "TagA"};
  fy_pull_result *r;

  /* first pull: the master, which suggests the slave */
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &o, &r), 0);
  assert_int_equal(r->status, FY_PULL_FOUND);
  assert_true(r->broker_id == 0);
  assert_true(r->suggest_broker_id == 1);
  assert_int_equal(r->nmsgs, 5);
  assert_true(r->next_offset == 10);
  for (size_t i = 0; i < r->nmsgs; i++) {
    assert_string_equal(r->msgs[i].tags, "TagA");
    assert_true(r->msgs[i].queue_offset == 2 * i);
    assert_true(r->msgs[i].broker_id == 0);
    assert_string_equal(r->msgs[i].topic, "TopicP");
    char body[32];
    snprintf(body, sizeof body, "bk-q0-%zu", 2 * i);
    assert_int_equal(r->msgs[i].body_len, strlen(body));
    assert_memory_equal(r->msgs[i].body, body, strlen(body));
  }
  fy_result_free(r);
  assert_int_equal(m->nlast, 1);
  assert_true(m->last_hashes[0] == fy_tag_hash("TagA", 4));

  /* second: the slave */
  int sp = atomic_load(&s->pulls);
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &o, &r), 0);
  assert_true(r->broker_id == 1);
  assert_int_equal(r->nmsgs, 5);
  assert_true(r->msgs[0].broker_id == 1);
  fy_result_free(r);
  assert_int_equal(atomic_load(&s->pulls), sp + 1);

  /* the slave says master: back to the master */
  atomic_store(&s->suggest, 0);
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &o, &r), 0);
  assert_true(r->broker_id == 1);
  fy_result_free(r);
  atomic_store(&m->suggest, 0);
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &o, &r), 0);
  assert_true(r->broker_id == 0);
  fy_result_free(r);

  /* a broker that does not filter: the client re-checks tag strings */
  atomic_store(&m->filter, 0);
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &o, &r), 0);
  assert_int_equal(r->nmsgs, 5);
  for (size_t i = 0; i < r->nmsgs; i++)
    assert_string_equal(r->msgs[i].tags, "TagA");
  fy_result_free(r);
  fy_pull_options all = {.expression = "*", .max_msgs = 4};
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &all, &r), 0);
  assert_int_equal(r->nmsgs, 4);
  assert_true(r->next_offset == 4);
  fy_result_free(r);

  /* offsets out of range and nothing new */
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 99, &all, &r), 0);
  assert_int_equal(r->status, FY_PULL_OFFSET_ILLEGAL);
  assert_true(r->next_offset == 10);
  fy_result_free(r);
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 10, &all, &r), 0);
  assert_int_equal(r->status, FY_PULL_NO_NEW_MSG);
  fy_result_free(r);

  /* long poll: a message arriving during the hold is returned */
  fy_pull_options lp = {.suspend_timeout_ms = 2000};
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 10, &lp, &r), 0);
  assert_int_equal(r->status, FY_PULL_NO_NEW_MSG); /* nothing came within 2 s */
  fy_result_free(r);

  /* offsets: min / max, committed (none yet), commit to the master */
  uint64_t off;
  assert_int_equal(fy_client_min_offset(cl, &q, 0, &off), 0);
  assert_true(off == 0);
  assert_int_equal(fy_client_max_offset(cl, &q, 0, &off), 0);
  assert_true(off == 10);
  assert_int_equal(fy_pull_consumer_fetch_offset(pc, &q, 0, &off), -FY_ENOT_FOUND);
  assert_int_equal(fy_pull_consumer_commit_offset(pc, &q, 3, 0), 0);
  assert_true(fb_offset(m, 0, &off) && off == 3);
  assert_false(fb_offset(s, 0, &off));

  /* the master dies but is still in the route: one pull fails (refused),
   * then its address is avoided and pulls and commits go to the slave */
  fb_crash(m);
  atomic_store(&s->suggest, 0);
  assert_true(fy_pull_consumer_pull(pc, &q, 0, &o, &r) < 0);
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &o, &r), 0);
  assert_true(r->broker_id == 1);
  fy_result_free(r);
  assert_int_equal(fy_pull_consumer_commit_offset(pc, &q, 5, 0), 0);
  assert_true(fb_offset(s, 0, &off) && off == 5);

  /* the master leaves the route: pulls and commits go to the slave */
  fb_unregister(m);
  atomic_store(&s->suggest, 0);
  fy_queue_list *ql;
  WAIT_UNTIL(fy_client_topic_queues(cl, "TopicP", true, 0, &ql) == 0 &&
             (ql->n == 0 ? (fy_result_free(ql), true) : (fy_result_free(ql), false)));
  assert_int_equal(queues_of(cl, "TopicP", false), 1); /* still readable */
  assert_int_equal(fy_pull_consumer_pull(pc, &q, 0, &o, &r), 0);
  assert_true(r->broker_id == 1);
  assert_int_equal(r->nmsgs, 5);
  fy_result_free(r);
  assert_int_equal(fy_pull_consumer_commit_offset(pc, &q, 7, 0), 0);
  assert_true(fb_offset(s, 0, &off) && off == 7);
  assert_int_equal(fy_pull_consumer_fetch_offset(pc, &q, 0, &off), 0);
  assert_true(off == 7);

  /* a producer has no master to write to */
  fy_producer *p = producer(cl, 0);
  fy_message mm = msg("TopicP", "x");
  fy_send_result sr;
  assert_int_equal(fy_producer_send(p, &mm, NULL, &sr), -FY_ENO_BROKER);
  fy_producer_close(p);

  fy_pull_consumer_close(pc);
  fy_client_close(cl);
  senv_stop(e);
}

/* ------------------------------------------------------------ push consumer */

#define MAXSEEN 4096
struct seen {
  pthread_mutex_t mu;
  int count[FB_MAXQ][MAXSEEN];
  int total, unique;
  int by_consumer[2];
  int fail_offset;        /* CONSUME_LATER once for this offset of queue 0 */
  int failed_once;
  uint32_t redelivered_reconsume;
  atomic_int block;       /* listener waits while set */
  atomic_int in_listener;
};

struct lctx {
  struct seen *s;
  int who;
};

static fy_consume_result listener(const fy_message_view *const *msgs, size_t n, void *arg) {
  struct lctx *x = arg;
  struct seen *s = x->s;
  atomic_fetch_add(&s->in_listener, 1);
  while (atomic_load(&s->block))
    usleep(1000);
  fy_consume_result r = FY_CONSUME_SUCCESS;
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < n; i++) {
    const fy_message_view *m = msgs[i];
    if (m->queue_id == 0 && (int)m->queue_offset == s->fail_offset && !s->failed_once) {
      s->failed_once = 1;
      r = FY_CONSUME_LATER;
      continue;
    }
    if (m->queue_id == 0 && (int)m->queue_offset == s->fail_offset)
      s->redelivered_reconsume = m->reconsume_times;
    if (m->queue_offset < MAXSEEN && m->queue_id < FB_MAXQ) {
      if (s->count[m->queue_id][m->queue_offset]++ == 0)
        s->unique++;
    }
    s->total++;
    s->by_consumer[x->who]++;
  }
  pthread_mutex_unlock(&s->mu);
  return r;
}

static int seen_unique(struct seen *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->unique;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static int by_consumer(struct seen *s, int who) {
  pthread_mutex_lock(&s->mu);
  int n = s->by_consumer[who];
  pthread_mutex_unlock(&s->mu);
  return n;
}

static fy_push_consumer *push(fy_client *cl, const char *group, const char *topic,
                              fy_consume_from from, struct lctx *x, fy_push_config *extra) {
  fy_push_config c = extra ? *extra : (fy_push_config){0};
  c.group = group;
  c.listener = listener;
  c.listener_arg = x;
  c.from = from;
  if (!c.consume_threads)
    c.consume_threads = 4;
  c.group_check_interval_ms = 200;
  c.commit_interval_ms = 300;
  c.suspend_timeout_ms = 1000;
  if (!c.retry_delay_ms)
    c.retry_delay_ms = 100;
  fy_push_consumer *pc;
  assert_int_equal(fy_push_consumer_new(cl, &c, &pc), 0);
  assert_int_equal(fy_push_consumer_subscribe(pc, topic, "*"), 0);
  assert_int_equal(fy_push_consumer_start(pc), 0);
  return pc;
}

static size_t owned(fy_push_consumer *pc, uint32_t *mask) {
  fy_owned_queues *o;
  assert_int_equal(fy_push_consumer_owned(pc, &o), 0);
  size_t n = o->n;
  if (mask) {
    *mask = 0;
    for (size_t i = 0; i < n; i++)
      *mask |= 1u << o->queues[i].queue.queue_id;
  }
  fy_result_free(o);
  return n;
}

static bool all_committed(struct fb *b, uint32_t nq, uint64_t want) {
  for (uint32_t q = 0; q < nq; q++) {
    uint64_t off;
    if (!fb_offset(b, q, &off) || off != want)
      return false;
  }
  return true;
}

static void test_push_clustering(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "bq", 0, "TopicC", 8);
  for (uint32_t q = 0; q < 8; q++)
    fb_preload(b, q, 50, false);
  static struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .fail_offset = -1};
  struct lctx x1 = {&s, 0}, x2 = {&s, 1};
  fy_client *c1 = client_on(e, "c1"), *c2 = client_on(e, "c2");
  fy_push_consumer *p1 = push(c1, "G1", "TopicC", FY_FROM_FIRST_OFFSET, &x1, NULL);
  fy_push_consumer *p2 = push(c2, "G1", "TopicC", FY_FROM_FIRST_OFFSET, &x2, NULL);
  /* AllocateMessageQueueAveragely over sorted ids: c1 < c2 */
  uint32_t m1, m2;
  WAIT_UNTIL(owned(p1, &m1) == 4 && owned(p2, &m2) == 4 && m1 == 0x0f && m2 == 0xf0);
  WAIT_UNTIL(seen_unique(&s) == 400);
  WAIT_UNTIL(all_committed(b, 8, 50));
  assert_int_equal(fb_ncids(b), 2);

  /* the group shrinks: c1 takes everything, quickly */
  assert_int_equal(fy_push_consumer_close(p2), 0);
  WAIT_UNTIL(owned(p1, &m1) == 8);
  assert_int_equal(fb_ncids(b), 1);
  fb_preload(b, 5, 10, false);
  WAIT_UNTIL(seen_unique(&s) == 410);

  /* offsets committed on close */
  assert_int_equal(fy_push_consumer_close(p1), 0);
  uint64_t off;
  assert_true(fb_offset(b, 5, &off) && off == 60);
  assert_int_equal(fb_ncids(b), 0); /* unregistered */
  fy_client_close(c1);
  fy_client_close(c2);
  senv_stop(e);
}

static void test_push_flow_control_and_redelivery(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "bf", 0, "TopicF", 1);
  fb_preload(b, 0, 200, false);
  static struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .fail_offset = 3};
  atomic_store(&s.block, 1);
  struct lctx x = {&s, 0};
  fy_client *cl = client_on(e, "f1");
  fy_push_config extra = {.queue_buffer_max_msgs = 10, .pull_batch_size = 5, .consume_threads = 1};
  fy_push_consumer *pc = push(cl, "GF", "TopicF", FY_FROM_FIRST_OFFSET, &x, &extra);
  WAIT_UNTIL(atomic_load(&s.in_listener) == 1);
  usleep(300000);
  int p1 = atomic_load(&b->pulls);
  usleep(500000);
  /* the buffer is full: no more pulls while the listener is stuck */
  assert_int_equal(atomic_load(&b->pulls), p1);
  fy_owned_queues *o;
  assert_int_equal(fy_push_consumer_owned(pc, &o), 0);
  assert_int_equal(o->n, 1);
  assert_true(o->queues[0].buffered_msgs >= 10 && o->queues[0].buffered_msgs <= 15);
  assert_true(o->queues[0].commit_offset == 0);
  fy_result_free(o);
  atomic_store(&s.block, 0);
  WAIT_UNTIL(seen_unique(&s) == 200);
  assert_true(atomic_load(&b->pulls) > p1);
  /* offset 3 failed once and came back with reconsume_times 1 */
  assert_int_equal(s.failed_once, 1);
  assert_int_equal(s.redelivered_reconsume, 1);
  WAIT_UNTIL(all_committed(b, 1, 200));
  assert_int_equal(fy_push_consumer_close(pc), 0);
  fy_client_close(cl);
  senv_stop(e);
}

static void test_push_consume_from(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "bl", 0, "TopicL", 2);
  fb_preload(b, 0, 10, false);
  fb_preload(b, 1, 10, false);
  fy_client *cl = client_on(e, "l1");
  /* queue 1 has a committed offset: it wins over consume-from */
  fy_pull_consumer *pull;
  assert_int_equal(fy_pull_consumer_new(cl, "GL", &pull), 0);
  fy_queue q1 = {.topic = "TopicL", .broker_name = "bl", .queue_id = 1};
  assert_int_equal(fy_pull_consumer_commit_offset(pull, &q1, 4, 0), 0);
  fy_pull_consumer_close(pull);

  static struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .fail_offset = -1};
  struct lctx x = {&s, 0};
  fy_push_consumer *pc = push(cl, "GL", "TopicL", FY_FROM_LAST_OFFSET, &x, NULL);
  WAIT_UNTIL(seen_unique(&s) == 6); /* queue 1 from 4; queue 0 from its end */
  usleep(300000);
  assert_int_equal(seen_unique(&s), 6);
  pthread_mutex_lock(&s.mu);
  assert_int_equal(s.count[0][9], 0);
  assert_int_equal(s.count[1][4], 1);
  assert_int_equal(s.count[1][3], 0);
  pthread_mutex_unlock(&s.mu);
  fb_preload(b, 0, 1, false); /* offset 10 */
  WAIT_UNTIL(seen_unique(&s) == 7);
  pthread_mutex_lock(&s.mu);
  assert_int_equal(s.count[0][10], 1);
  pthread_mutex_unlock(&s.mu);
  assert_int_equal(fy_push_consumer_close(pc), 0);
  uint64_t off;
  assert_true(fb_offset(b, 0, &off) && off == 11);
  assert_true(fb_offset(b, 1, &off) && off == 10);
  fy_client_close(cl);
  senv_stop(e);
}

static void test_push_broadcasting(void **state) {
  (void)state;
  struct senv *e = senv_start(1);
  struct fb *b = fb_add(e, "C1", "bb", 0, "TopicBc", 2);
  fb_preload(b, 0, 10, false);
  fb_preload(b, 1, 10, false);
  const char *dir = fy_test_mkdtemp("client-bc");
  char dirbuf[512];
  snprintf(dirbuf, sizeof dirbuf, "%s", dir);
  static struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .fail_offset = -1};
  struct lctx x1 = {&s, 0}, x2 = {&s, 1};
  fy_push_config bc = {.model = FY_BROADCASTING, .offset_store_dir = dirbuf};
  fy_client *c1 = client_on(e, "b1"), *c2 = client_on(e, "b2");
  fy_push_consumer *p1 = push(c1, "GB", "TopicBc", FY_FROM_FIRST_OFFSET, &x1, &bc);
  fy_push_consumer *p2 = push(c2, "GB", "TopicBc", FY_FROM_FIRST_OFFSET, &x2, &bc);
  WAIT_UNTIL(owned(p1, NULL) == 2 && owned(p2, NULL) == 2);
  WAIT_UNTIL(by_consumer(&s, 0) >= 20 && by_consumer(&s, 1) >= 20); /* each gets all */
  assert_int_equal(fy_push_consumer_close(p1), 0);
  assert_int_equal(fy_push_consumer_close(p2), 0);
  assert_int_equal(atomic_load(&b->commits), 0); /* nothing on the broker */
  char path[700];
  snprintf(path, sizeof path, "%s/GB@b1.offsets", dirbuf);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[512];
  int lines = 0;
  while (fgets(line, sizeof line, f)) {
    assert_non_null(strstr(line, "TopicBc\tbb\t"));
    assert_non_null(strstr(line, "\t10\n"));
    lines++;
  }
  fclose(f);
  assert_int_equal(lines, 2);
  fy_client_close(c1);

  /* restart: continues from the file, nothing redelivered */
  c1 = client_on(e, "b1");
  static struct seen s2 = {.mu = PTHREAD_MUTEX_INITIALIZER, .fail_offset = -1};
  struct lctx x3 = {&s2, 0};
  p1 = push(c1, "GB", "TopicBc", FY_FROM_FIRST_OFFSET, &x3, &bc);
  WAIT_UNTIL(owned(p1, NULL) == 2);
  usleep(300000);
  assert_int_equal(seen_unique(&s2), 0);
  fb_preload(b, 1, 1, false);
  WAIT_UNTIL(seen_unique(&s2) == 1);
  assert_int_equal(fy_push_consumer_close(p1), 0);
  fy_client_close(c1);
  fy_client_close(c2);
  fy_test_rmtree(dirbuf);
  senv_stop(e);
}

int main(void) {
  fy_log_set_level(getenv("FY_TEST_DEBUG") ? FY_LOG_DEBUG : FY_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_route_refresh_and_ns_failover),
      cmocka_unit_test(test_send_results),
      cmocka_unit_test(test_send_retry_other_broker),
      cmocka_unit_test(test_deadlines),
      cmocka_unit_test(test_async_many),
      cmocka_unit_test(test_async_more_than_a_connection_takes),
      cmocka_unit_test(test_async_room_from_timeouts),
      cmocka_unit_test(test_pull_redirect_and_fallback),
      cmocka_unit_test(test_push_clustering),
      cmocka_unit_test(test_push_flow_control_and_redelivery),
      cmocka_unit_test(test_push_consume_from),
      cmocka_unit_test(test_push_broadcasting),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
