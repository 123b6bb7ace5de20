/* Config tables: defaults, parsing, errors that name the key, and every key documented. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/err.h"
#include "broker/broker_config.h"
#include "namesrv/namesrv.h"
#include "store/store.h"
#include "testutil.h"

static void test_store_defaults_are_rocketmq(void **state) {
  (void)state;
  struct fy_store_config c;
  fy_store_config_defaults(&c);
  assert_int_equal(c.commitlog_segment_size, 1073741824ull);
  assert_int_equal(c.cq_file_size, 6000000);
  assert_int_equal(c.flush_disk_type, FY_ASYNC_FLUSH);
  assert_int_equal(c.flush_interval_ms, 500);
  assert_int_equal(c.max_message_size, 4194304);
  assert_int_equal(c.file_reserved_hours, 72);
  assert_string_equal(c.delete_when, "04");
  assert_int_equal(c.disk_max_used_ratio, 75);
  assert_int_equal(c.disk_full_ratio, 90);
  assert_false(c.clean_forcibly); /* Ferry keeps unexpired segments; RocketMQ does not */
  assert_int_equal(c.io_backend, FY_AIO_AUTO);
}

static void test_set_and_errors(void **state) {
  (void)state;
  struct fy_store_config c;
  fy_store_config_defaults(&c);
  struct fy_config_section sec = {fy_store_config_keys, &c};
  char err[256];
  assert_int_equal(fy_config_set(&sec, 1, "flushDiskType", "SYNC_FLUSH", err, sizeof err), 0);
  assert_int_equal(c.flush_disk_type, FY_SYNC_FLUSH);
  assert_int_equal(fy_config_set(&sec, 1, "ioBackend", "threads", err, sizeof err), 0);
  assert_int_equal(c.io_backend, FY_AIO_THREADS);
  assert_int_equal(fy_config_set(&sec, 1, "messageIndexEnable", "false", err, sizeof err), 0);
  assert_false(c.index_enable);

  assert_int_equal(fy_config_set(&sec, 1, "flushDiskType", "SOMETIMES", err, sizeof err),
                   -FY_ECONFIG);
  assert_non_null(strstr(err, "flushDiskType"));
  assert_int_equal(fy_config_set(&sec, 1, "maxMessageSize", "12abc", err, sizeof err), -FY_ECONFIG);
  assert_non_null(strstr(err, "maxMessageSize"));
  assert_int_equal(fy_config_set(&sec, 1, "maxMessageSize", "-5", err, sizeof err), -FY_ECONFIG);
  assert_int_equal(fy_config_set(&sec, 1, "diskMaxUsedSpaceRatio", "99", err, sizeof err),
                   -FY_ECONFIG);
  assert_non_null(strstr(err, "out of range"));
  assert_int_equal(fy_config_set(&sec, 1, "messageIndexEnable", "yes", err, sizeof err),
                   -FY_ECONFIG);
  assert_int_equal(fy_config_set(&sec, 1, "brokerNmae", "x", err, sizeof err), -FY_ECONFIG);
  assert_non_null(strstr(err, "unknown configuration key 'brokerNmae'"));
  char big[600];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(fy_config_set(&sec, 1, "storePathRootDir", big, err, sizeof err), -FY_ECONFIG);
}

static void test_load_file(void **state) {
  (void)state;
  const char *dir = fy_test_mkdtemp("config");
  char path[600];
  snprintf(path, sizeof path, "%s/broker.conf", dir);
  FILE *f = fopen(path, "w");
  fputs("# comment\n! also a comment\n\n  flushDiskType = SYNC_FLUSH  \nfileReservedTime=48\n", f);
  fclose(f);
  struct fy_store_config c;
  fy_store_config_defaults(&c);
  struct fy_config_section sec = {fy_store_config_keys, &c};
  char err[512];
  assert_int_equal(fy_config_load(&sec, 1, path, err, sizeof err), 0);
  assert_int_equal(c.flush_disk_type, FY_SYNC_FLUSH);
  assert_int_equal(c.file_reserved_hours, 48);

  f = fopen(path, "w");
  fputs("fileReservedTime=48\nnoSuchKey=1\n", f);
  fclose(f);
  assert_int_equal(fy_config_load(&sec, 1, path, err, sizeof err), -FY_ECONFIG);
  assert_non_null(strstr(err, ":2:"));
  assert_non_null(strstr(err, "noSuchKey"));

  f = fopen(path, "w");
  fputs("just words\n", f);
  fclose(f);
  assert_int_equal(fy_config_load(&sec, 1, path, err, sizeof err), -FY_ECONFIG);
  assert_non_null(strstr(err, "key=value"));
  assert_int_equal(fy_config_load(&sec, 1, "/nonexistent/x.conf", err, sizeof err), -FY_ECONFIG);
  fy_test_rmtree(dir);
}

/* Every key of a table must be documented, with its default, in conf/broker.conf
 * as a "#key=default" or "key=value" line. */
static void check_documented(const struct fy_config_key *keys, const char *conf) {
  FILE *f = fopen(conf, "r");
  assert_non_null(f);
  static char text[1 << 20];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  for (const struct fy_config_key *k = keys; k->name; k++) {
    char want[256];
    snprintf(want, sizeof want, "\n#%s=", k->name);
    char want2[256];
    snprintf(want2, sizeof want2, "\n%s=", k->name);
    if (!strstr(text, want) && !strstr(text, want2))
      fail_msg("config key %s is not documented in %s", k->name, conf);
  }
}

static void test_every_store_key_documented(void **state) {
  (void)state;
  check_documented(fy_store_config_keys, FY_SOURCE_DIR "/conf/broker.conf");
}

static void test_every_broker_key_documented(void **state) {
  (void)state;
  check_documented(fy_broker_config_keys, FY_SOURCE_DIR "/conf/broker.conf");
}

static void test_every_namesrv_key_documented(void **state) {
  (void)state;
  check_documented(fy_namesrv_config_keys, FY_SOURCE_DIR "/conf/namesrv.conf");
}

static void test_broker_cross_checks(void **state) {
  (void)state;
  struct fy_broker_settings s;
  fy_broker_settings_defaults(&s);
  char err[256];
  assert_int_equal(fy_broker_settings_check(&s, err, sizeof err), 0);
  s.broker.role = FY_ROLE_SLAVE;
  assert_int_equal(fy_broker_settings_check(&s, err, sizeof err), -FY_ECONFIG);
  assert_non_null(strstr(err, "brokerId"));
  s.broker.broker_id = 1;
  assert_int_equal(fy_broker_settings_check(&s, err, sizeof err), 0);
  s.broker.role = FY_ROLE_SYNC_MASTER;
  assert_int_equal(fy_broker_settings_check(&s, err, sizeof err), -FY_ECONFIG);
  s.broker.broker_id = 0;
  s.store.max_message_size = s.store.write_buffer_size;
  assert_int_equal(fy_broker_settings_check(&s, err, sizeof err), -FY_ECONFIG);
  assert_non_null(strstr(err, "writeBufferSize"));
  fy_broker_settings_defaults(&s);
  strcpy(s.store.delete_when, "04;x");
  assert_int_equal(fy_broker_settings_check(&s, err, sizeof err), -FY_ECONFIG);
  assert_non_null(strstr(err, "deleteWhen: '04;x'"));
}

static void test_delete_when_hours(void **state) {
  (void)state;
  uint32_t m = 0;
  assert_int_equal(fy_store_parse_hours("04", &m), 0);
  assert_int_equal(m, 1u << 4);
  assert_int_equal(fy_store_parse_hours("0;4;23", &m), 0);
  assert_int_equal(m, 1u | 1u << 4 | 1u << 23);
  assert_int_equal(fy_store_parse_hours("16;16", &m), 0);
  assert_int_equal(m, 1u << 16);
  assert_int_equal(fy_store_parse_hours("", &m), 0); /* never on the clock */
  assert_int_equal(m, 0);
  const char *bad[] = {"24", "4am", "04;", ";04", "04,16", " 04", "004", "-1", "04;;16", "99"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    m = 7;
    assert_int_equal(fy_store_parse_hours(bad[i], &m), -FY_ECONFIG);
    assert_int_equal(m, 7); /* untouched */
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_store_defaults_are_rocketmq),
      cmocka_unit_test(test_delete_when_hours),
      cmocka_unit_test(test_set_and_errors),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_every_store_key_documented),
      cmocka_unit_test(test_every_broker_key_documented),
      cmocka_unit_test(test_every_namesrv_key_documented),
      cmocka_unit_test(test_broker_cross_checks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
