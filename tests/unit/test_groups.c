/* Subscription groups: name validation, RocketMQ's defaults, auto-create on
 * first use (and its switch, with system groups always created), updates
 * and data version, the bounds of an update and the field they name, a
 * group from RocketMQ's SubscriptionGroupConfig JSON, JSON export and the
 * slave's replace; then persistence across reopen and a corrupt file as a
 * start-up error. */
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

#include "broker/groups.h"
#include "common/err.h"
#include "testutil.h"

#define DEADLINE_MS 20000

static fy_groups *open_mem(bool auto_create, uint32_t groups_max) {
  struct fy_groups_options opt;
  fy_groups_options_init(&opt);
  assert_true(opt.auto_create); /* RocketMQ's default */
  opt.auto_create = auto_create;
  opt.groups_max = groups_max;
  fy_groups *g = NULL;
  char err[256];
  assert_int_equal(fy_groups_open(NULL, NULL, &opt, &g, err, sizeof err), 0);
  return g;
}

static void test_name_check(void **state) {
  (void)state;
  const char *why = NULL;
  assert_int_equal(fy_group_name_check("please_rename_unique_group_name_4", &why), 0);
  assert_int_equal(fy_group_name_check("%RETRY%x|y-z", NULL), 0);
  assert_int_equal(fy_group_name_check("", &why), -EINVAL);
  assert_non_null(why);
  assert_int_equal(fy_group_name_check("a@b", NULL), -EINVAL);
  assert_int_equal(fy_group_name_check("a b", NULL), -EINVAL);
  assert_int_equal(fy_group_name_check(NULL, NULL), -EINVAL);
  char name[300];
  memset(name, 'g', sizeof name);
  name[FY_GROUP_NAME_MAX] = '\0';
  assert_int_equal(fy_group_name_check(name, NULL), 0);
  name[FY_GROUP_NAME_MAX] = 'g';
  name[FY_GROUP_NAME_MAX + 1] = '\0';
  assert_int_equal(fy_group_name_check(name, &why), -EINVAL);
  assert_non_null(strstr(why, "longer"));
  assert_true(fy_group_is_system("CID_RMQ_SYS_TRANS"));
  assert_false(fy_group_is_system("CG"));
}

static void test_auto_create_defaults(void **state) {
  (void)state;
  fy_groups *g = open_mem(true, 100);
  struct fy_group_config c;
  bool created = false;
  assert_int_equal(fy_groups_get(g, "CG", &c), -FY_ENOT_FOUND);
  assert_int_equal(fy_groups_find_or_create(g, "CG", &c, &created), 0);
  assert_true(created);
  assert_string_equal(c.name, "CG");
  assert_true(c.consume_enable);
  assert_true(c.consume_broadcast_enable);
  assert_true(c.consume_from_min_enable);
  assert_int_equal(c.retry_queues, 1);
  assert_int_equal(c.retry_max_times, 16);
  assert_int_equal(c.broker_id, 0);
  assert_int_equal(c.which_broker_when_consume_slowly, 1);
  assert_true(c.notify_consumer_ids_changed_enable);
  assert_int_equal(fy_groups_data_version(g).counter, 1);
  /* second use: found, not re-created, no bump */
  assert_int_equal(fy_groups_find_or_create(g, "CG", &c, &created), 0);
  assert_false(created);
  assert_int_equal(fy_groups_data_version(g).counter, 1);
  assert_int_equal(fy_groups_count(g), 1);
  assert_int_equal(fy_groups_find_or_create(g, "bad name", &c, &created), -EINVAL);
  fy_groups_close(g);
}

static void test_auto_create_off(void **state) {
  (void)state;
  fy_groups *g = open_mem(false, 100);
  struct fy_group_config c;
  bool created = true;
  assert_int_equal(fy_groups_find_or_create(g, "CG", &c, &created), -FY_ENOT_FOUND);
  assert_false(created);
  assert_int_equal(fy_groups_count(g), 0);
  /* system groups are created regardless (RocketMQ MixAll.isSysConsumerGroup) */
  assert_int_equal(fy_groups_find_or_create(g, "CID_RMQ_SYS_X", &c, &created), 0);
  assert_true(created);
  /* an explicitly configured group is found */
  fy_group_config_default(&c, "CG");
  c.retry_max_times = 3;
  assert_int_equal(fy_groups_put(g, &c, NULL), 0);
  struct fy_group_config out;
  assert_int_equal(fy_groups_find_or_create(g, "CG", &out, &created), 0);
  assert_false(created);
  assert_int_equal(out.retry_max_times, 3);
  fy_groups_close(g);
}

static void test_update_delete_bounds(void **state) {
  (void)state;
  fy_groups *g = open_mem(true, 2);
  struct fy_group_config c;
  fy_group_config_default(&c, "A");
  assert_int_equal(fy_groups_put(g, &c, NULL), 0);
  assert_int_equal(fy_groups_put(g, &c, NULL), 0); /* unchanged: no bump */
  assert_int_equal(fy_groups_data_version(g).counter, 1);
  c.consume_enable = false;
  c.broker_id = 1;
  c.retry_queues = 0;
  assert_int_equal(fy_groups_put(g, &c, NULL), 0);
  assert_int_equal(fy_groups_data_version(g).counter, 2);
  struct fy_group_config out;
  assert_int_equal(fy_groups_get(g, "A", &out), 0);
  assert_false(out.consume_enable);
  assert_int_equal(out.broker_id, 1);
  assert_int_equal(out.retry_queues, 0);

  const char *why = NULL;
  c.retry_queues = FY_GROUP_RETRY_QUEUES_MAX + 1;
  assert_int_equal(fy_groups_put(g, &c, &why), -EINVAL);
  assert_non_null(strstr(why, "retryQueueNums"));
  assert_int_equal(fy_groups_data_version(g).counter, 2);
  assert_int_equal(fy_groups_get(g, "A", &out), 0);
  assert_int_equal(out.retry_queues, 0); /* refused: unchanged */

  assert_int_equal(fy_groups_find_or_create(g, "B", NULL, NULL), 0);
  assert_int_equal(fy_groups_find_or_create(g, "C", NULL, NULL), -ENOSPC);
  assert_int_equal(fy_groups_count(g), 2);

  struct fy_group_config *list;
  size_t n;
  assert_int_equal(fy_groups_list(g, &list, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(list[0].name, "A");
  assert_string_equal(list[1].name, "B");
  free(list);

  assert_int_equal(fy_groups_delete(g, "A"), 0);
  assert_int_equal(fy_groups_delete(g, "A"), -FY_ENOT_FOUND);
  assert_int_equal(fy_groups_data_version(g).counter, 4);
  assert_int_equal(fy_groups_find_or_create(g, "C", NULL, NULL), 0);
  fy_groups_close(g);
}

static void test_config_check_names_the_field(void **state) {
  (void)state;
  struct fy_group_config c;
  const char *why = NULL;
  fy_group_config_default(&c, "G");
  assert_int_equal(fy_group_config_check(&c, &why), 0);
  assert_null(why);
  c.retry_queues = 0; /* no retries: allowed */
  c.retry_max_times = 0;
  c.broker_id = FY_GROUP_BROKER_ID_MAX;
  c.which_broker_when_consume_slowly = FY_GROUP_BROKER_ID_MAX;
  assert_int_equal(fy_group_config_check(&c, NULL), 0);
  c.retry_queues = FY_GROUP_RETRY_QUEUES_MAX;
  c.retry_max_times = FY_GROUP_RETRY_TIMES_MAX;
  assert_int_equal(fy_group_config_check(&c, NULL), 0);

  fy_group_config_default(&c, "G");
  c.retry_queues = FY_GROUP_RETRY_QUEUES_MAX + 1;
  assert_int_equal(fy_group_config_check(&c, &why), -EINVAL);
  assert_string_equal(why, "retryQueueNums must be from 0 to 1024");
  fy_group_config_default(&c, "G");
  c.retry_max_times = (uint32_t)FY_GROUP_RETRY_TIMES_MAX + 1;
  assert_int_equal(fy_group_config_check(&c, &why), -EINVAL);
  assert_string_equal(why, "retryMaxTimes must be from 0 to 2147483647");
  fy_group_config_default(&c, "G");
  c.broker_id = FY_GROUP_BROKER_ID_MAX + 1;
  assert_int_equal(fy_group_config_check(&c, &why), -EINVAL);
  assert_string_equal(why, "brokerId must be from 0 to 1024");
  fy_group_config_default(&c, "G");
  c.which_broker_when_consume_slowly = UINT64_MAX;
  assert_int_equal(fy_group_config_check(&c, &why), -EINVAL);
  assert_string_equal(why, "whichBrokerWhenConsumeSlowly must be from 0 to 1024");
  fy_group_config_default(&c, "G");
  strcpy(c.name, "a b");
  assert_int_equal(fy_group_config_check(&c, &why), -EINVAL);
  assert_non_null(strstr(why, "illegal characters"));
  c.name[0] = '\0';
  assert_int_equal(fy_group_config_check(&c, &why), -EINVAL);
  assert_non_null(strstr(why, "blank"));
}

/* UPDATE_AND_CREATE_SUBSCRIPTIONGROUP's body, as the Java admin writes it. */
static void test_config_from_json(void **state) {
  (void)state;
  struct fy_group_config c;
  char err[256];
  const char *full =
      "{\"brokerId\":1,\"consumeBroadcastEnable\":false,\"consumeEnable\":false,"
      "\"consumeFromMinEnable\":false,\"groupName\":\"CG_X\",\"notifyConsumerIdsChangedEnable\""
      ":false,\"retryMaxTimes\":3,\"retryQueueNums\":4,\"whichBrokerWhenConsumeSlowly\":2,"
      "\"groupRetryPolicy\":{\"type\":\"CUSTOMIZED\"},\"groupSysFlag\":0}"; /* 5.x extras */
  assert_int_equal(fy_group_config_from_json(full, strlen(full), &c, err, sizeof err), 0);
  assert_string_equal(c.name, "CG_X");
  assert_false(c.consume_enable);
  assert_false(c.consume_from_min_enable);
  assert_false(c.consume_broadcast_enable);
  assert_false(c.notify_consumer_ids_changed_enable);
  assert_int_equal(c.retry_queues, 4);
  assert_int_equal(c.retry_max_times, 3);
  assert_int_equal(c.broker_id, 1);
  assert_int_equal(c.which_broker_when_consume_slowly, 2);

  /* missing fields: SubscriptionGroupConfig's defaults */
  const char *part = "{\"groupName\":\"CG_Y\",\"retryMaxTimes\":0}";
  assert_int_equal(fy_group_config_from_json(part, strlen(part), &c, err, sizeof err), 0);
  struct fy_group_config want;
  fy_group_config_default(&want, "CG_Y");
  want.retry_max_times = 0;
  assert_memory_equal(&c, &want, sizeof c);

  struct {
    const char *json;
    const char *err;
  } bad[] = {
      {"", "not a SubscriptionGroupConfig"},
      {"[1]", "not a JSON object"},
      {"{\"retryMaxTimes\":1}", "groupName is missing"},
      {"{\"groupName\":7}", "groupName is not a string"},
      {"{\"groupName\":\"\"}", "blank"},
      {"{\"groupName\":\"a@b\"}", "illegal characters"},
      {"{\"groupName\":\"G\",\"consumeEnable\":\"false\"}",
       "\"consumeEnable\" is not true or false"},
      {"{\"groupName\":\"G\",\"retryQueueNums\":-1}", "\"retryQueueNums\" = -1 is outside 0..1024"},
      {"{\"groupName\":\"G\",\"retryQueueNums\":1025}", "\"retryQueueNums\" = 1025"},
      {"{\"groupName\":\"G\",\"retryMaxTimes\":2147483648}", "\"retryMaxTimes\""},
      {"{\"groupName\":\"G\",\"brokerId\":1.5}", "\"brokerId\" is not an integer"},
      {"{\"groupName\":\"G\",\"whichBrokerWhenConsumeSlowly\":2000}",
       "\"whichBrokerWhenConsumeSlowly\" = 2000 is outside 0..1024"},
      {"{\"groupName\":\"G\",\"groupName\":\"H\"}", "not a SubscriptionGroupConfig"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    assert_int_equal(fy_group_config_from_json(bad[i].json, strlen(bad[i].json), &c, err,
                                               sizeof err),
                     -EINVAL);
    if (!strstr(err, bad[i].err))
      fail_msg("%s: error '%s' does not say '%s'", bad[i].json, err, bad[i].err);
  }
}

static void test_json_and_replace(void **state) {
  (void)state;
  fy_groups *master = open_mem(true, 100), *slave = open_mem(true, 100);
  struct fy_group_config c;
  fy_group_config_default(&c, "CG");
  c.which_broker_when_consume_slowly = 1;
  c.retry_max_times = 5;
  assert_int_equal(fy_groups_put(master, &c, NULL), 0);
  assert_int_equal(fy_groups_find_or_create(slave, "SlaveOnly", NULL, NULL), 0);

  size_t len;
  char *s = fy_groups_to_json(master, &len);
  json_t *root = json_loads(s, 0, NULL);
  json_t *e = json_object_get(json_object_get(root, "subscriptionGroupTable"), "CG");
  assert_non_null(e);
  assert_string_equal(json_string_value(json_object_get(e, "groupName")), "CG");
  assert_int_equal(json_integer_value(json_object_get(e, "retryMaxTimes")), 5);
  assert_int_equal(json_integer_value(json_object_get(e, "retryQueueNums")), 1);
  assert_int_equal(json_integer_value(json_object_get(e, "brokerId")), 0);
  assert_int_equal(json_integer_value(json_object_get(e, "whichBrokerWhenConsumeSlowly")), 1);
  assert_true(json_is_true(json_object_get(e, "consumeEnable")));
  assert_true(json_is_true(json_object_get(e, "consumeBroadcastEnable")));
  assert_int_equal(
      json_integer_value(json_object_get(json_object_get(root, "dataVersion"), "counter")), 1);
  json_decref(root);

  bool changed;
  char err[256];
  assert_int_equal(fy_groups_replace_from_json(slave, s, len, &changed, err, sizeof err), 0);
  assert_true(changed);
  assert_int_equal(fy_groups_count(slave), 1);
  struct fy_group_config out;
  assert_int_equal(fy_groups_get(slave, "CG", &out), 0);
  assert_int_equal(out.retry_max_times, 5);
  assert_int_equal(fy_groups_replace_from_json(slave, s, len, &changed, err, sizeof err), 0);
  assert_false(changed);
  free(s);

  const char *bad = "{\"subscriptionGroupTable\":{\"X\":{\"consumeEnable\":\"yes\"}}}";
  assert_int_equal(fy_groups_replace_from_json(slave, bad, strlen(bad), &changed, err, sizeof err),
                   -FY_ECORRUPT);
  assert_non_null(strstr(err, "consumeEnable"));
  assert_int_equal(fy_groups_count(slave), 1);
  fy_groups_close(master);
  fy_groups_close(slave);
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
  snprintf(f->root, sizeof f->root, "%s", fy_test_mkdtemp("groups"));
  snprintf(f->file, sizeof f->file, "%s/config/subscriptionGroup.json", f->root);
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

static int open_disk(struct fixture *f, fy_groups **g, char *err, size_t errlen) {
  struct fy_groups_options opt;
  fy_groups_options_init(&opt);
  opt.root_dir = f->root;
  return fy_groups_open(&f->loop, f->aio, &opt, g, err, errlen);
}

static fy_groups *reopen(struct fixture *f) {
  fy_groups *g = NULL;
  char err[512] = "";
  if (open_disk(f, &g, err, sizeof err) != 0)
    fail_msg("open: %s", err);
  return g;
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

static void test_persistence_round_trip(void **state) {
  struct fixture *f = *state;
  fy_groups *g = reopen(f);
  assert_int_equal(fy_groups_find_or_create(g, "CG", NULL, NULL), 0); /* auto-created */
  struct fy_group_config c;
  fy_group_config_default(&c, "Slow");
  c.which_broker_when_consume_slowly = 2;
  c.consume_broadcast_enable = false;
  assert_int_equal(fy_groups_put(g, &c, NULL), 0);
  struct fy_data_version v = fy_groups_data_version(g);
  struct done d = {0};
  assert_int_equal(fy_groups_flush(g, on_done, &d), 0);
  assert_true(fy_test_run_until(&f->loop, &d.done, DEADLINE_MS));
  assert_int_equal(d.status, 0);
  assert_int_equal(fy_groups_persist_status(g), 0);
  fy_groups_close(g);

  g = reopen(f);
  assert_int_equal(fy_groups_count(g), 2);
  struct fy_group_config out;
  assert_int_equal(fy_groups_get(g, "CG", &out), 0);
  assert_int_equal(out.retry_max_times, 16);
  assert_int_equal(fy_groups_get(g, "Slow", &out), 0);
  assert_int_equal(out.which_broker_when_consume_slowly, 2);
  assert_false(out.consume_broadcast_enable);
  struct fy_data_version v2 = fy_groups_data_version(g);
  assert_true(fy_data_version_equal(&v, &v2));
  fy_groups_close(g);
}

static void test_auto_created_group_persisted(void **state) {
  struct fixture *f = *state;
  fy_groups *g = reopen(f);
  bool created;
  assert_int_equal(fy_groups_find_or_create(g, "FirstUse", NULL, &created), 0);
  assert_true(created);
  fy_groups_close(g); /* the save in flight completes in the background */
  uv_run(&f->loop, UV_RUN_DEFAULT);
  g = reopen(f);
  assert_int_equal(fy_groups_find_or_create(g, "FirstUse", NULL, &created), 0);
  assert_false(created);
  fy_groups_close(g);
}

static void test_corrupt_file_is_an_error(void **state) {
  struct fixture *f = *state;
  fy_groups *g = reopen(f);
  fy_groups_close(g);
  FILE *fp = fopen(f->file, "w");
  assert_non_null(fp);
  fputs("{\"subscriptionGroupTable\":{\"CG\":{\"retryQueueNums\":-1}}}", fp);
  fclose(fp);
  char err[512] = "";
  g = NULL;
  assert_int_equal(open_disk(f, &g, err, sizeof err), -FY_ECORRUPT);
  assert_null(g);
  assert_non_null(strstr(err, "subscriptionGroup.json"));
  assert_non_null(strstr(err, "retryQueueNums"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_name_check),
      cmocka_unit_test(test_auto_create_defaults),
      cmocka_unit_test(test_auto_create_off),
      cmocka_unit_test(test_update_delete_bounds),
      cmocka_unit_test(test_config_check_names_the_field),
      cmocka_unit_test(test_config_from_json),
      cmocka_unit_test(test_json_and_replace),
      cmocka_unit_test_setup_teardown(test_persistence_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_auto_created_group_persisted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_file_is_an_error, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
