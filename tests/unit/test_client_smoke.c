/* client against the real processes: build/bin/mqnamesrv and a
 * mqbroker master/slave pair, started here (skipped, exit 77, when the
 * binaries are not next to this test's build). Creates a topic, sends
 * (sync and async), consumes everything with a push consumer and checks
 * the committed offsets; then SIGKILLs the master, as the failover drill
 * does: calls keep their deadlines, sends fail cleanly, and a new push
 * consumer reads every message from the slave. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/cl_int.h"
#include "common/log.h"
#include "ferry/client.h"
#include "testutil.h"

#define WAIT_MS 30000
#define WAIT_UNTIL(cond)                                                            \
  do {                                                                              \
    uint64_t t0_ = fy__cl_now_ms();                                                 \
    while (!(cond)) {                                                               \
      if (fy__cl_now_ms() - t0_ > WAIT_MS)                                          \
        fail_msg("timed out waiting for %s", #cond);                                \
      usleep(20000);                                                                \
    }                                                                               \
  } while (0)

static char bindir[PATH_MAX];
static char tmpdir[512];
static pid_t pids[3];

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  close(fd);
  return ntohs(a.sin_port);
}

/* Starts argv with stdout to a pipe (returned) and stderr to log. */
static pid_t spawn(char *const argv[], const char *log, int *out_fd) {
  int p[2];
  if (pipe(p))
    abort();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(p[1], 1);
    FILE *f = fopen(log, "w");
    if (f)
      dup2(fileno(f), 2);
    close(p[0]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(p[1]);
  *out_fd = p[0];
  return pid;
}

/* Reads "... listening on port N" from fd. */
static int read_port(int fd) {
  char buf[256];
  size_t n = 0;
  while (n + 1 < sizeof buf) {
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0)
      return -1;
    if (buf[n++] == '\n')
      break;
  }
  buf[n] = '\0';
  const char *p = strstr(buf, "port ");
  return p ? atoi(p + 5) : -1;
}

static int start_broker(int idx, int ns_port, int port, int ha_port, int master_ha, uint64_t id) {
  char bin[PATH_MAX + 16];
  snprintf(bin, sizeof bin, "%s/mqbroker", bindir);
  char *argv[64];
  int m = 0;
  argv[m++] = bin;
  char o[24][640];
  int no = 0;
  snprintf(o[no++], sizeof o[0], "namesrvAddr=127.0.0.1:%d", ns_port);
  snprintf(o[no++], sizeof o[0], "brokerClusterName=C1");
  snprintf(o[no++], sizeof o[0], "brokerName=broker-a");
  snprintf(o[no++], sizeof o[0], "brokerId=%llu", (unsigned long long)id);
  snprintf(o[no++], sizeof o[0], "brokerRole=%s", id ? "SLAVE" : "SYNC_MASTER");
  snprintf(o[no++], sizeof o[0], "slaveSyncMetadataInterval=500");
  snprintf(o[no++], sizeof o[0], "listenAddress=127.0.0.1");
  snprintf(o[no++], sizeof o[0], "brokerIP1=127.0.0.1");
  snprintf(o[no++], sizeof o[0], "listenPort=%d", port);
  snprintf(o[no++], sizeof o[0], "haListenPort=%d", ha_port);
  if (master_ha)
    snprintf(o[no++], sizeof o[0], "haMasterAddress=127.0.0.1:%d", master_ha);
  snprintf(o[no++], sizeof o[0], "storePathRootDir=%s/%s", tmpdir, id ? "slave" : "master");
  snprintf(o[no++], sizeof o[0], "registerNameServerPeriod=1000");
  snprintf(o[no++], sizeof o[0], "mappedFileSizeCommitLog=67108864");
  snprintf(o[no++], sizeof o[0], "maxHashSlotNum=1024");
  snprintf(o[no++], sizeof o[0], "maxIndexNum=65536");
  snprintf(o[no++], sizeof o[0], "slaveReadEnable=true");
  for (int i = 0; i < no; i++) {
    argv[m++] = "-o";
    argv[m++] = o[i];
  }
  argv[m] = NULL;
  char log[700];
  snprintf(log, sizeof log, "%s/broker%d.log", tmpdir, idx);
  int fd;
  pids[idx] = spawn(argv, log, &fd);
  int got = read_port(fd);
  close(fd);
  return got;
}

static void stop_all(void) {
  for (int i = 2; i >= 0; i--)
    if (pids[i] > 0) {
      kill(pids[i], SIGKILL);
      waitpid(pids[i], NULL, 0);
      pids[i] = 0;
    }
}

struct counts {
  pthread_mutex_t mu;
  int unique;
  uint8_t seen[4][1024];
};

static fy_consume_result on_msgs(const fy_message_view *const *msgs, size_t n, void *arg) {
  struct counts *c = arg;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < n; i++)
    if (msgs[i]->queue_id < 4 && msgs[i]->queue_offset < 1024 &&
        !c->seen[msgs[i]->queue_id][msgs[i]->queue_offset]++)
      c->unique++;
  pthread_mutex_unlock(&c->mu);
  return FY_CONSUME_SUCCESS;
}

static int uniq(struct counts *c) {
  pthread_mutex_lock(&c->mu);
  int n = c->unique;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static void on_sent(int err, const fy_send_result *r, void *arg) {
  if (!err && r->status == FY_SEND_OK)
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
}

static bool progress_done(fy_client *cl, const char *group, uint64_t want) {
  fy_consumer_progress *p;
  if (fy_admin_consumer_progress(cl, group, "Smoke", 0, &p))
    return false;
  uint64_t sum = 0;
  for (size_t i = 0; i < p->n; i++)
    sum += p->queues[i].consumer_offset;
  fy_result_free(p);
  return sum == want;
}

static bool slave_has(fy_client *cl, const char *addr, const char *topic) {
  fy_topic_config_list *l;
  if (fy_admin_topic_configs(cl, addr, 0, &l))
    return false;
  bool has = false;
  for (size_t i = 0; i < l->n; i++)
    has |= strcmp(l->items[i].topic, topic) == 0;
  fy_result_free(l);
  return has;
}

static void test_smoke(void **state) {
  (void)state;
  char ns_log[700], nsarg[64];
  snprintf(tmpdir, sizeof tmpdir, "%s", fy_test_mkdtemp("client-smoke"));
  snprintf(ns_log, sizeof ns_log, "%s/namesrv.log", tmpdir);
  char nsbin[PATH_MAX + 16];
  snprintf(nsbin, sizeof nsbin, "%s/mqnamesrv", bindir);
  char *nsargv[] = {nsbin, "-o", "listenPort=0", "-o", "listenAddress=127.0.0.1", "-o",
                    "brokerChannelExpiredTime=4000", "-o", "scanNotActiveBrokerInterval=500",
                    NULL};
  int fd;
  pids[0] = spawn(nsargv, ns_log, &fd);
  int ns_port = read_port(fd);
  close(fd);
  assert_true(ns_port > 0);
  int mport = free_port(), mha = free_port(), sport = free_port(), sha = free_port();
  assert_int_equal(start_broker(1, ns_port, mport, mha, 0, 0), mport);
  assert_int_equal(start_broker(2, ns_port, sport, sha, mha, 1), sport);

  snprintf(nsarg, sizeof nsarg, "127.0.0.1:%d", ns_port);
  fy_client_config cc = {.namesrv_addr = nsarg, .route_refresh_ms = 500,
                         .heartbeat_interval_ms = 1000};
  fy_client *cl;
  assert_int_equal(fy_client_new(&cc, &cl), 0);
  fy_cluster_info *ci = NULL;
  WAIT_UNTIL(fy_admin_cluster_list(cl, 0, &ci) == 0 &&
             (ci->nbrokers == 1 && ci->brokers[0].naddrs == 2 ? (fy_result_free(ci), true)
                                                               : (fy_result_free(ci), false)));
  fy_topic_config tc = {.topic = "Smoke", .read_queues = 4, .write_queues = 4};
  assert_int_equal(fy_admin_update_topic(cl, NULL, "C1", &tc, 0), 0);
  fy_queue_list *ql = NULL;
  WAIT_UNTIL(fy_client_topic_queues(cl, "Smoke", true, 0, &ql) == 0 &&
             (ql->n == 4 ? (fy_result_free(ql), true) : (fy_result_free(ql), false)));

  fy_producer_config pc = {.group = "SmokeP"};
  fy_producer *p;
  assert_int_equal(fy_producer_new(cl, &pc, &p), 0);
  for (int i = 0; i < 200; i++) {
    char body[32];
    snprintf(body, sizeof body, "smoke-%d", i);
    fy_message m = {.topic = "Smoke", .body = body, .body_len = strlen(body), .tags = "T"};
    fy_send_result r;
    assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
    assert_int_equal(r.status, FY_SEND_OK);
  }
  int ok = 0;
  for (int i = 0; i < 800; i++) {
    fy_message m = {.topic = "Smoke", .body = "async", .body_len = 5, .tags = "T"};
    assert_int_equal(fy_producer_send_async(p, &m, NULL, on_sent, &ok), 0); /* counts SEND_OK */
  }
  WAIT_UNTIL(__atomic_load_n(&ok, __ATOMIC_SEQ_CST) == 800);

  struct counts c1 = {.mu = PTHREAD_MUTEX_INITIALIZER};
  fy_push_config pcfg = {.group = "SmokeG", .listener = on_msgs, .listener_arg = &c1,
                         .from = FY_FROM_FIRST_OFFSET, .consume_threads = 4,
                         .commit_interval_ms = 500};
  fy_push_consumer *pu;
  assert_int_equal(fy_push_consumer_new(cl, &pcfg, &pu), 0);
  assert_int_equal(fy_push_consumer_subscribe(pu, "Smoke", "T"), 0);
  assert_int_equal(fy_push_consumer_start(pu), 0);
  WAIT_UNTIL(uniq(&c1) == 1000);
  assert_int_equal(fy_push_consumer_close(pu), 0);
  assert_true(progress_done(cl, "SmokeG", 1000));

  /* The slave must know the topic (metadata sync) before the master goes:
   * it refuses reads of topics it has no configuration for. */
  char saddr[64];
  snprintf(saddr, sizeof saddr, "127.0.0.1:%d", sport);
  WAIT_UNTIL(slave_has(cl, saddr, "Smoke"));

  /* the drill: SIGKILL the master (SYNC_MASTER: every SEND_OK is on the slave) */
  kill(pids[1], SIGKILL);
  waitpid(pids[1], NULL, 0);
  pids[1] = 0;
  fy_message m = {.topic = "Smoke", .body = "after", .body_len = 5};
  fy_send_result r;
  uint64_t t0 = fy__cl_now_ms();
  int err = fy_producer_send(p, &m, NULL, &r);
  assert_true(err < 0);
  assert_true(fy__cl_now_ms() - t0 < 4500); /* 3 s send timeout + margin */
  print_message("send after the kill: %s (%s)\n", fy_client_strerror(err), r.error);
  fy_producer_close(p);

  struct counts c2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
  pcfg.group = "SmokeG2";
  pcfg.listener_arg = &c2;
  assert_int_equal(fy_push_consumer_new(cl, &pcfg, &pu), 0);
  assert_int_equal(fy_push_consumer_subscribe(pu, "Smoke", "*"), 0);
  assert_int_equal(fy_push_consumer_start(pu), 0);
  WAIT_UNTIL(uniq(&c2) == 1000); /* all from the slave */
  assert_int_equal(fy_push_consumer_close(pu), 0);
  WAIT_UNTIL(progress_done(cl, "SmokeG2", 1000)); /* committed on the slave */

  fy_client_close(cl);
  stop_all();
  fy_test_rmtree(tmpdir);
}

int main(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    return 77;
  exe[n] = '\0';
  snprintf(bindir, sizeof bindir, "%s/../bin", dirname(exe));
  char probe[PATH_MAX + 16];
  snprintf(probe, sizeof probe, "%s/mqbroker", bindir);
  if (access(probe, X_OK) != 0) {
    fprintf(stderr, "no %s: skipped\n", probe);
    return 77;
  }
  snprintf(probe, sizeof probe, "%s/mqnamesrv", bindir);
  if (access(probe, X_OK) != 0)
    return 77;
  fy_log_set_level(getenv("FY_TEST_DEBUG") ? FY_LOG_DEBUG : FY_LOG_ERROR);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_smoke)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  stop_all();
  return rc;
}
