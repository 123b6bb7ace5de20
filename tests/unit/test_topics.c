/* Topic configurations: name validation, reserved names, queue and table
 * bounds, data version bumps, queries, auto-create, JSON export and the
 * slave's replace (in memory); then persistence: round trip across reopen,
 * save after a change without a flush, a corrupt file as a start-up error,
 * a failed save reported with the old file intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "broker/topics.h"
#include "common/err.h"
#include "testutil.h"

#define DEADLINE_MS 20000

static fy_topics *open_mem(uint32_t queues_max, uint32_t topics_max) {
  struct fy_topics_options opt;
  fy_topics_options_init(&opt);
  opt.queues_max = queues_max;
  opt.topics_max = topics_max;
  fy_topics *t = NULL;
  char err[256];
  assert_int_equal(fy_topics_open(NULL, NULL, &opt, &t, err, sizeof err), 0);
  return t;
}

static struct fy_topic_config cfg(const char *name, uint32_t rq, uint32_t wq) {
  struct fy_topic_config c = {.read_queues = rq, .write_queues = wq, .perm = FY_PERM_DEFAULT};
  snprintf(c.name, sizeof c.name, "%s", name);
  return c;
}

/* ---- names ---- */

static void test_name_check(void **state) {
  (void)state;
  const char *why = NULL;
  assert_int_equal(fy_topic_name_check("TopicTest", &why), 0);
  assert_null(why);
  assert_int_equal(fy_topic_name_check("%RETRY%group_1|a-b", NULL), 0);
  assert_int_equal(fy_topic_name_check("", &why), -EINVAL);
  assert_non_null(strstr(why, "blank"));
  assert_int_equal(fy_topic_name_check(NULL, NULL), -EINVAL);
  const char *bad[] = {"a b", "a@b", "a/b", "a.b", "a:b", "tab\t", "caf\xc3\xa9", "a\nb", "*"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why = NULL;
    assert_int_equal(fy_topic_name_check(bad[i], &why), -EINVAL);
    assert_non_null(strstr(why, "illegal characters"));
  }
  char name[200];
  memset(name, 'a', sizeof name);
  name[FY_TOPIC_NAME_MAX] = '\0'; /* 127 characters: the limit */
  assert_int_equal(fy_topic_name_check(name, NULL), 0);
  name[FY_TOPIC_NAME_MAX] = 'a';
  name[FY_TOPIC_NAME_MAX + 1] = '\0'; /* 128 */
  assert_int_equal(fy_topic_name_check(name, &why), -EINVAL);
  assert_non_null(strstr(why, "longer"));
}

static void test_system_names(void **state) {
  (void)state;
  assert_true(fy_topic_is_system("TBW102"));
  assert_true(fy_topic_is_system("SCHEDULE_TOPIC_XXXX"));
  assert_true(fy_topic_is_system("RMQ_SYS_TRANS_HALF_TOPIC"));
  assert_true(fy_topic_is_system("OFFSET_MOVED_EVENT"));
  assert_true(fy_topic_is_system("rmq_sys_wheel_timer"));
  assert_false(fy_topic_is_system("TopicTest"));
  assert_false(fy_topic_is_system("%RETRY%CG"));
  assert_false(fy_topic_is_system("TBW1020"));

  fy_topics *t = open_mem(1024, 100);
  struct fy_topic_config c = cfg("SCHEDULE_TOPIC_XXXX", 18, 18);
  const char *why = NULL;
  assert_int_equal(fy_topics_put(t, &c, 0, &why), -EPERM);
  assert_non_null(strstr(why, "system topic"));
  assert_false(fy_topics_exists(t, "SCHEDULE_TOPIC_XXXX"));
  assert_int_equal(fy_topics_put(t, &c, FY_TOPIC_ALLOW_SYSTEM, NULL), 0);
  assert_true(fy_topics_exists(t, "SCHEDULE_TOPIC_XXXX"));
  /* auto-create never makes a reserved topic */
  bool created = true;
  assert_int_equal(fy_topics_auto_create(t, "TBW102", 8, NULL, &created, NULL), -EPERM);
  assert_false(created);
  fy_topics_close(t);
}

/* ---- bounds ---- */

static void test_queue_and_perm_bounds(void **state) {
  (void)state;
  fy_topics *t = open_mem(16, 100);
  const char *why;
  struct fy_topic_config c = cfg("T", 0, 8);
  assert_int_equal(fy_topics_put(t, &c, 0, &why), -EINVAL);
  assert_non_null(strstr(why, "readQueueNums"));
  c = cfg("T", 8, 0);
  assert_int_equal(fy_topics_put(t, &c, 0, &why), -EINVAL);
  assert_non_null(strstr(why, "writeQueueNums"));
  c = cfg("T", 17, 8); /* queues_max is a parameter: 16 here */
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), -EINVAL);
  c = cfg("T", 8, 17);
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), -EINVAL);
  c = cfg("T", 16, 1);
  c.perm = 8;
  assert_int_equal(fy_topics_put(t, &c, 0, &why), -EINVAL);
  assert_non_null(strstr(why, "perm"));
  assert_int_equal(fy_topics_count(t), 0);
  c.perm = FY_PERM_READ | FY_PERM_WRITE | FY_PERM_INHERIT;
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  c.perm = 0; /* no permission at all is a valid state (a fenced topic) */
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  assert_int_equal(fy_topics_auto_create(t, "U", 17, NULL, NULL, NULL), -EINVAL);
  assert_int_equal(fy_topics_auto_create(t, "U", 0, NULL, NULL, NULL), -EINVAL);
  assert_false(fy_topics_exists(t, "U"));
  fy_topics_close(t);

  /* the default queue bound is 1024 */
  t = open_mem(1024, 100);
  c = cfg("T", 1024, 1024);
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  c = cfg("T", 1025, 1);
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), -EINVAL);
  fy_topics_close(t);
}

static void test_table_bound(void **state) {
  (void)state;
  fy_topics *t = open_mem(1024, 3);
  const char *why;
  for (int i = 0; i < 3; i++) {
    char name[16];
    snprintf(name, sizeof name, "T%d", i);
    struct fy_topic_config c = cfg(name, 4, 4);
    assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  }
  struct fy_topic_config c = cfg("T3", 4, 4);
  assert_int_equal(fy_topics_put(t, &c, 0, &why), -ENOSPC);
  assert_int_equal(fy_topics_auto_create(t, "T4", 4, NULL, NULL, NULL), -ENOSPC);
  c = cfg("T1", 8, 8); /* updating an existing topic still works when full */
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  assert_int_equal(fy_topics_count(t), 3);
  fy_topics_close(t);

  struct fy_topics_options opt;
  fy_topics_options_init(&opt);
  assert_int_equal(opt.queues_max, 1024);
  opt.queues_max = 0;
  char err[256];
  assert_int_equal(fy_topics_open(NULL, NULL, &opt, &t, err, sizeof err), -EINVAL);
}

/* ---- data version and queries ---- */

static void test_data_version_and_queries(void **state) {
  (void)state;
  fy_topics *t = open_mem(1024, 100);
  struct fy_data_version v0 = fy_topics_data_version(t);
  assert_int_equal(v0.counter, 0);

  struct fy_topic_config c = cfg("B", 8, 8), out;
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  struct fy_data_version v1 = fy_topics_data_version(t);
  assert_int_equal(v1.counter, 1);
  assert_true(v1.timestamp_ms > 1600000000000); /* wall clock in ms */

  /* the same configuration again: no change, no bump */
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  assert_int_equal(fy_topics_data_version(t).counter, 1);
  /* a rejected change does not bump */
  struct fy_topic_config bad = cfg("B", 0, 8);
  assert_int_equal(fy_topics_put(t, &bad, 0, NULL), -EINVAL);
  assert_int_equal(fy_topics_data_version(t).counter, 1);
  /* an update bumps */
  c.order = true;
  c.topic_sys_flag = 3;
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  assert_int_equal(fy_topics_data_version(t).counter, 2);
  assert_int_equal(fy_topics_get(t, "B", &out), 0);
  assert_true(out.order);
  assert_int_equal(out.topic_sys_flag, 3);
  assert_int_equal(out.read_queues, 8);

  struct fy_topic_config a = cfg("A", 2, 4), cc = cfg("C", 1, 1);
  assert_int_equal(fy_topics_put(t, &cc, 0, NULL), 0);
  assert_int_equal(fy_topics_put(t, &a, 0, NULL), 0);
  assert_int_equal(fy_topics_data_version(t).counter, 4);
  assert_int_equal(fy_topics_count(t), 3);

  struct fy_topic_config *list;
  size_t n;
  assert_int_equal(fy_topics_list(t, &list, &n), 0);
  assert_int_equal(n, 3);
  assert_string_equal(list[0].name, "A");
  assert_string_equal(list[1].name, "B");
  assert_string_equal(list[2].name, "C");
  assert_int_equal(list[0].write_queues, 4);
  free(list);

  /* delete bumps; deleting a missing topic does not */
  assert_int_equal(fy_topics_delete(t, "C"), 0);
  assert_int_equal(fy_topics_data_version(t).counter, 5);
  assert_int_equal(fy_topics_delete(t, "C"), -FY_ENOT_FOUND);
  assert_int_equal(fy_topics_data_version(t).counter, 5);
  assert_int_equal(fy_topics_get(t, "C", &out), -FY_ENOT_FOUND);
  assert_false(fy_topics_exists(t, "C"));
  fy_topics_close(t);
}

static int count_and_stop(void *arg, const struct fy_topic_config *c) {
  int *seen = arg;
  (*seen)++;
  return strcmp(c->name, "stop") == 0 ? 42 : 0;
}

static void test_foreach(void **state) {
  (void)state;
  fy_topics *t = open_mem(1024, 100);
  int seen = 0;
  assert_int_equal(fy_topics_foreach(t, count_and_stop, &seen), 0);
  assert_int_equal(seen, 0);
  const char *names[] = {"a", "b", "c", "d"};
  for (size_t i = 0; i < 4; i++) {
    struct fy_topic_config c = cfg(names[i], 1, 1);
    assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  }
  assert_int_equal(fy_topics_foreach(t, count_and_stop, &seen), 0);
  assert_int_equal(seen, 4);
  struct fy_topic_config c = cfg("stop", 1, 1);
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  seen = 0;
  assert_int_equal(fy_topics_foreach(t, count_and_stop, &seen), 42);
  assert_true(seen >= 1 && seen <= 5);
  fy_topics_close(t);
}

static void test_auto_create(void **state) {
  (void)state;
  fy_topics *t = open_mem(1024, 100);
  struct fy_topic_config out;
  bool created = false;
  assert_int_equal(fy_topics_auto_create(t, "%RETRY%CG", 1, &out, &created, NULL), 0);
  assert_true(created);
  assert_string_equal(out.name, "%RETRY%CG");
  assert_int_equal(out.read_queues, 1);
  assert_int_equal(out.write_queues, 1);
  assert_int_equal(out.perm, 6);
  assert_false(out.order);
  assert_int_equal(fy_topics_data_version(t).counter, 1);
  /* second time: the existing configuration, untouched */
  assert_int_equal(fy_topics_auto_create(t, "%RETRY%CG", 8, &out, &created, NULL), 0);
  assert_false(created);
  assert_int_equal(out.read_queues, 1);
  assert_int_equal(fy_topics_data_version(t).counter, 1);
  const char *why = NULL;
  assert_int_equal(fy_topics_auto_create(t, "bad name", 4, &out, &created, &why), -EINVAL);
  assert_non_null(why);
  fy_topics_close(t);
}

/* ---- JSON (in memory) ---- */

static void test_json_shape(void **state) {
  (void)state;
  fy_topics *t = open_mem(1024, 100);
  struct fy_topic_config c = cfg("TopicTest", 8, 4);
  c.order = true;
  assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  size_t len;
  char *s = fy_topics_to_json(t, &len);
  assert_non_null(s);
  assert_int_equal(strlen(s), len);
  json_error_t je;
  json_t *root = json_loads(s, 0, &je);
  assert_non_null(root);
  json_t *dv = json_object_get(root, "dataVersion");
  assert_int_equal(json_integer_value(json_object_get(dv, "counter")), 1);
  assert_true(json_integer_value(json_object_get(dv, "timestamp")) > 0);
  json_t *e = json_object_get(json_object_get(root, "topicConfigTable"), "TopicTest");
  assert_non_null(e);
  assert_string_equal(json_string_value(json_object_get(e, "topicName")), "TopicTest");
  assert_int_equal(json_integer_value(json_object_get(e, "readQueueNums")), 8);
  assert_int_equal(json_integer_value(json_object_get(e, "writeQueueNums")), 4);
  assert_int_equal(json_integer_value(json_object_get(e, "perm")), 6);
  assert_true(json_is_true(json_object_get(e, "order")));
  json_decref(root);
  free(s);
  fy_topics_close(t);
}

static void test_replace_from_json(void **state) {
  (void)state;
  fy_topics *master = open_mem(1024, 100), *slave = open_mem(1024, 100);
  struct fy_topic_config a = cfg("A", 8, 8), b = cfg("B", 2, 4);
  b.perm = FY_PERM_READ;
  assert_int_equal(fy_topics_put(master, &a, 0, NULL), 0);
  assert_int_equal(fy_topics_put(master, &b, 0, NULL), 0);
  struct fy_topic_config stale = cfg("OnlyOnSlave", 1, 1);
  assert_int_equal(fy_topics_put(slave, &stale, 0, NULL), 0);

  size_t len;
  char *s = fy_topics_to_json(master, &len);
  assert_non_null(s);
  bool changed = false;
  char err[256];
  assert_int_equal(fy_topics_replace_from_json(slave, s, len, &changed, err, sizeof err), 0);
  assert_true(changed);
  assert_int_equal(fy_topics_count(slave), 2);
  assert_false(fy_topics_exists(slave, "OnlyOnSlave")); /* the master's table, whole */
  struct fy_topic_config out;
  assert_int_equal(fy_topics_get(slave, "B", &out), 0);
  assert_int_equal(out.read_queues, 2);
  assert_int_equal(out.write_queues, 4);
  assert_int_equal(out.perm, FY_PERM_READ);
  struct fy_data_version mv = fy_topics_data_version(master), sv = fy_topics_data_version(slave);
  assert_true(fy_data_version_equal(&mv, &sv));
  /* the same version again: nothing to do */
  assert_int_equal(fy_topics_replace_from_json(slave, s, len, &changed, err, sizeof err), 0);
  assert_false(changed);
  free(s);

  /* bad documents leave the table intact and say why */
  const char *bad[] = {
      "{not json",
      "[1,2]",
      "{\"dataVersion\":{\"counter\":9,\"timestamp\":1},\"topicConfigTable\":{\"X\":"
      "{\"topicName\":\"X\",\"readQueueNums\":0,\"writeQueueNums\":1}}}",
      "{\"dataVersion\":{\"counter\":9,\"timestamp\":1},\"topicConfigTable\":{\"X\":"
      "{\"topicName\":\"Y\",\"readQueueNums\":1,\"writeQueueNums\":1}}}",
      "{\"dataVersion\":{\"counter\":9,\"timestamp\":1},\"topicConfigTable\":{\"bad name\":"
      "{\"readQueueNums\":1,\"writeQueueNums\":1}}}",
      "{\"dataVersion\":{\"counter\":9,\"timestamp\":1},\"topicConfigTable\":{\"X\":"
      "{\"readQueueNums\":1,\"writeQueueNums\":1,\"perm\":9}}}",
      "{\"dataVersion\":{\"counter\":9,\"timestamp\":1},\"topicConfigTable\":{\"X\":"
      "{\"readQueueNums\":\"8\",\"writeQueueNums\":1}}}",
      "{\"dataVersion\":{\"counter\":9,\"timestamp\":1},\"topicConfigTable\":{\"X\":"
      "{\"writeQueueNums\":1}}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    assert_int_equal(
        fy_topics_replace_from_json(slave, bad[i], strlen(bad[i]), &changed, err, sizeof err),
        -FY_ECORRUPT);
    assert_false(changed);
    assert_true(strlen(err) > 0);
    assert_int_equal(fy_topics_count(slave), 2);
    sv = fy_topics_data_version(slave);
    assert_true(fy_data_version_equal(&mv, &sv));
  }
  /* more topics than this broker allows: refused whole */
  fy_topics *tiny = open_mem(1024, 1);
  s = fy_topics_to_json(master, &len);
  assert_int_equal(fy_topics_replace_from_json(tiny, s, len, &changed, err, sizeof err), -ENOSPC);
  assert_int_equal(fy_topics_count(tiny), 0);
  free(s);
  fy_topics_close(tiny);

  /* RocketMQ's own file: extra fields are ignored, defaults fill the gaps */
  const char *rmq =
      "{\"dataVersion\":{\"counter\":7,\"stateVersion\":0,\"timestamp\":1700000000000},"
      "\"topicConfigTable\":{\"TopicTest\":{\"attributes\":{},\"order\":false,\"perm\":6,"
      "\"readQueueNums\":4,\"topicFilterType\":\"SINGLE_TAG\",\"topicName\":\"TopicTest\","
      "\"topicSysFlag\":0,\"writeQueueNums\":4},\"%RETRY%CG\":{\"readQueueNums\":1,"
      "\"writeQueueNums\":1}}}";
  assert_int_equal(fy_topics_replace_from_json(slave, rmq, strlen(rmq), &changed, err, sizeof err),
                   0);
  assert_true(changed);
  assert_int_equal(fy_topics_data_version(slave).counter, 7);
  assert_int_equal(fy_topics_data_version(slave).timestamp_ms, 1700000000000);
  assert_int_equal(fy_topics_get(slave, "%RETRY%CG", &out), 0);
  assert_int_equal(out.perm, 6);

  /* equal data versions but different tables (one change each within the same
   * millisecond): the master's table must still be taken */
  struct fy_data_version cur = fy_topics_data_version(slave);
  char doc[512];
  snprintf(doc, sizeof doc,
           "{\"dataVersion\":{\"counter\":%llu,\"timestamp\":%lld},\"topicConfigTable\":"
           "{\"Other\":{\"readQueueNums\":2,\"writeQueueNums\":2}}}",
           (unsigned long long)cur.counter, (long long)cur.timestamp_ms);
  assert_int_equal(fy_topics_replace_from_json(slave, doc, strlen(doc), &changed, err, sizeof err),
                   0);
  assert_true(changed);
  assert_int_equal(fy_topics_count(slave), 1);
  assert_true(fy_topics_exists(slave, "Other"));
  fy_topics_close(master);
  fy_topics_close(slave);
}

/* ---- persistence ---- */

struct fixture {
  uv_loop_t loop;
  fy_aio *aio;
  char root[512];
  char file[600];
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(fy_aio_init(&f->loop, FY_AIO_AUTO, 64, &f->aio), 0);
  snprintf(f->root, sizeof f->root, "%s", fy_test_mkdtemp("topics"));
  snprintf(f->file, sizeof f->file, "%s/config/topics.json", f->root);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  uv_run(&f->loop, UV_RUN_DEFAULT); /* a closed table's last save ends before aio (metafile.h) */
  assert_int_equal(fy_aio_pending(f->aio), 0);
  fy_aio_close(f->aio);
  assert_int_equal(fy_test_loop_finish(&f->loop), 0);
  fy_test_rmtree(f->root);
  free(f);
  return 0;
}

static int open_disk(struct fixture *f, fy_topics **t, char *err, size_t errlen) {
  struct fy_topics_options opt;
  fy_topics_options_init(&opt);
  opt.root_dir = f->root;
  return fy_topics_open(&f->loop, f->aio, &opt, t, err, errlen);
}

static fy_topics *reopen(struct fixture *f) {
  fy_topics *t = NULL;
  char err[512] = "";
  int r = open_disk(f, &t, err, sizeof err);
  if (r != 0)
    fail_msg("open: %s", err);
  return t;
}

struct done {
  bool done;
  int status;
};

static void on_done(void *arg, int status) {
  struct done *d = arg;
  d->done = true;
  d->status = status;
}

static int flush_wait(struct fixture *f, fy_topics *t) {
  struct done d = {0};
  assert_int_equal(fy_topics_flush(t, on_done, &d), 0);
  assert_true(fy_test_run_until(&f->loop, &d.done, DEADLINE_MS));
  return d.status;
}

static void write_file(const char *path, const char *content) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(content, fp);
  fclose(fp);
}

static void test_round_trip_across_reopen(void **state) {
  struct fixture *f = *state;
  fy_topics *t = reopen(f);
  assert_int_equal(fy_topics_count(t), 0);
  struct stat st;
  assert_int_equal(stat(f->file, &st), -1); /* nothing written before a change */
  struct fy_topic_config a = cfg("A", 8, 8), b = cfg("%RETRY%CG", 1, 1);
  a.order = true;
  a.topic_sys_flag = 5;
  b.perm = FY_PERM_WRITE | FY_PERM_INHERIT;
  assert_int_equal(fy_topics_put(t, &a, 0, NULL), 0);
  assert_int_equal(fy_topics_put(t, &b, 0, NULL), 0);
  assert_int_equal(fy_topics_delete(t, "%RETRY%CG"), 0);
  assert_int_equal(fy_topics_put(t, &b, 0, NULL), 0);
  struct fy_data_version v = fy_topics_data_version(t);
  assert_int_equal(flush_wait(f, t), 0);
  assert_int_equal(fy_topics_persist_status(t), 0);
  fy_topics_close(t);

  t = reopen(f);
  assert_int_equal(fy_topics_count(t), 2);
  struct fy_topic_config out;
  assert_int_equal(fy_topics_get(t, "A", &out), 0);
  assert_int_equal(out.read_queues, 8);
  assert_true(out.order);
  assert_int_equal(out.topic_sys_flag, 5);
  assert_int_equal(fy_topics_get(t, "%RETRY%CG", &out), 0);
  assert_int_equal(out.perm, FY_PERM_WRITE | FY_PERM_INHERIT);
  struct fy_data_version v2 = fy_topics_data_version(t);
  assert_true(fy_data_version_equal(&v, &v2));
  fy_topics_close(t);
}

static void test_saved_after_change_without_flush(void **state) {
  struct fixture *f = *state;
  fy_topics *t = reopen(f);
  for (int i = 0; i < 50; i++) { /* a burst: coalesced by the metafile */
    char name[16];
    snprintf(name, sizeof name, "T%d", i);
    struct fy_topic_config c = cfg(name, 4, 4);
    assert_int_equal(fy_topics_put(t, &c, 0, NULL), 0);
  }
  /* closing with a save in flight: it completes in the background */
  fy_topics_close(t);
  for (int i = 0; i < 100000 && fy_aio_pending(f->aio); i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* the rename and directory sync */
  t = reopen(f);
  assert_int_equal(fy_topics_count(t), 50);
  assert_true(fy_topics_exists(t, "T49"));
  assert_int_equal(fy_topics_data_version(t).counter, 50);
  fy_topics_close(t);
}

static void test_corrupt_file_is_an_error(void **state) {
  struct fixture *f = *state;
  fy_topics *t = reopen(f); /* creates <root>/config */
  fy_topics_close(t);
  const char *docs[] = {
      "{\"topicConfigTable\":{\"A\":{\"readQueueNums\":8,", /* torn */
      "{\"topicConfigTable\":{\"A\":{\"readQueueNums\":0,\"writeQueueNums\":8}}}",
      "",
  };
  const char *expect[] = {"line", "readQueueNums", "line"};
  for (size_t i = 0; i < 3; i++) {
    write_file(f->file, docs[i]);
    char err[512] = "";
    t = NULL;
    assert_int_equal(open_disk(f, &t, err, sizeof err), -FY_ECORRUPT);
    assert_null(t);
    assert_non_null(strstr(err, "topics.json")); /* names the file */
    assert_non_null(strstr(err, expect[i]));
    /* and leaves it alone for the operator */
    char *buf;
    size_t len;
    assert_int_equal(fy_metafile_load(f->file, &buf, &len), 0);
    assert_string_equal(buf, docs[i]);
    free(buf);
  }
}

static void test_stale_tmp_ignored_at_open(void **state) {
  struct fixture *f = *state;
  fy_topics *t = reopen(f);
  struct fy_topic_config a = cfg("A", 8, 8);
  assert_int_equal(fy_topics_put(t, &a, 0, NULL), 0);
  assert_int_equal(flush_wait(f, t), 0);
  fy_topics_close(t);
  char tmp[700];
  snprintf(tmp, sizeof tmp, "%s.tmp", f->file);
  write_file(tmp, "{\"topicConfigTable\":{\"Half"); /* a crash mid-save */
  t = reopen(f);
  assert_int_equal(fy_topics_count(t), 1);
  assert_true(fy_topics_exists(t, "A"));
  fy_topics_close(t);
}

static void test_failed_save_reported(void **state) {
  struct fixture *f = *state;
  fy_topics *t = reopen(f);
  struct fy_topic_config a = cfg("A", 8, 8);
  assert_int_equal(fy_topics_put(t, &a, 0, NULL), 0);
  assert_int_equal(flush_wait(f, t), 0);

  fy_aio_inject_fault(f->aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  struct fy_topic_config b = cfg("B", 8, 8);
  assert_int_equal(fy_topics_put(t, &b, 0, NULL), 0);
  for (int i = 0; i < 100000 && fy_topics_persist_status(t) == 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(fy_topics_persist_status(t), -EIO);
  /* the file still holds the last durable table */
  fy_topics *other = reopen(f);
  assert_int_equal(fy_topics_count(other), 1);
  fy_topics_close(other);
  /* a flush writes everything again and clears the status */
  assert_int_equal(flush_wait(f, t), 0);
  assert_int_equal(fy_topics_persist_status(t), 0);
  fy_topics_close(t);
  t = reopen(f);
  assert_int_equal(fy_topics_count(t), 2);
  fy_topics_close(t);
}

static void test_memory_only_flush(void **state) {
  (void)state;
  fy_topics *t = open_mem(1024, 10);
  struct done d = {0};
  assert_int_equal(fy_topics_flush(t, on_done, &d), -EINVAL);
  assert_false(d.done);
  fy_topics_close(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_name_check),
      cmocka_unit_test(test_system_names),
      cmocka_unit_test(test_queue_and_perm_bounds),
      cmocka_unit_test(test_table_bound),
      cmocka_unit_test(test_data_version_and_queries),
      cmocka_unit_test(test_foreach),
      cmocka_unit_test(test_auto_create),
      cmocka_unit_test(test_json_shape),
      cmocka_unit_test(test_replace_from_json),
      cmocka_unit_test(test_memory_only_flush),
      cmocka_unit_test_setup_teardown(test_round_trip_across_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_saved_after_change_without_flush, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_file_is_an_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stale_tmp_ignored_at_open, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_save_reported, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
