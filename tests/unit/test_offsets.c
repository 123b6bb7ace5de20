/* Consumer offsets: commit/query/reset, merge never moving backwards (alone
 * and as a whole document, including the master-restart scenario of
 * RocketMQ #1094), all-or-nothing documents, the entry and queue bounds,
 * listing and deleting; deletions (tombstones): a deleted group or topic
 * not merged back from the other broker's stale copy, the deletion carried
 * to it, a recreated group merging again, peers that know no tombstones,
 * bad deletion documents, the tombstone bounds; then persistence: flush on
 * demand, flush on the timer only when dirty, a failed timed save retried
 * with fresh data, a corrupt file as a start-up error, a deletion saved at
 * once and remembered across a restart. */
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

#include "broker/offsets.h"
#include "common/clock.h"
#include "common/err.h"
#include "testutil.h"

#define DEADLINE_MS 20000

static fy_offsets *open_mem_bounded(uint32_t entries_max, uint32_t queues_max) {
  struct fy_offsets_options opt;
  fy_offsets_options_init(&opt);
  opt.entries_max = entries_max;
  opt.queues_max = queues_max;
  fy_offsets *o = NULL;
  char err[256];
  assert_int_equal(fy_offsets_open(NULL, NULL, &opt, &o, err, sizeof err), 0);
  return o;
}

static fy_offsets *open_mem(void) { return open_mem_bounded(1u << 20, 1024); }

/* ---- in memory ---- */

static void test_commit_query_reset(void **state) {
  (void)state;
  fy_offsets *o = open_mem();
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), -1);
  struct fy_offset off;
  assert_int_equal(fy_offsets_get(o, "CG", "T", 0, &off), -FY_ENOT_FOUND);
  assert_false(fy_offsets_dirty(o));

  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 10), 0);
  assert_true(fy_offsets_dirty(o));
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 10);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 1), -1);
  assert_int_equal(fy_offsets_query(o, "CG2", "T", 0), -1);
  assert_int_equal(fy_offsets_query(o, "CG", "T2", 0), -1);
  assert_int_equal(fy_offsets_get(o, "CG", "T", 0, &off), 0);
  assert_int_equal(off.offset, 10);
  assert_true(off.updated_ms > 1600000000000);
  assert_int_equal(fy_offsets_entries(o), 1);

  /* a consumer's commit is authoritative, even backwards (counted) */
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 7), 0);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 7);
  assert_int_equal(fy_offsets_backward_commits(o), 1);
  /* a reset moves backwards too (resetOffsetByTime) */
  assert_int_equal(fy_offsets_reset(o, "CG", "T", 0, 0), 0);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 0);
  assert_int_equal(fy_offsets_backward_commits(o), 1);
  assert_int_equal(fy_offsets_reset(o, "CG", "T", 5, 99), 0);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 5), 99);
  assert_int_equal(fy_offsets_entries(o), 2);

  /* bad input */
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, -1), -EINVAL);
  assert_int_equal(fy_offsets_commit(o, "C@G", "T", 0, 1), -EINVAL);
  assert_int_equal(fy_offsets_commit(o, "CG", "T@x", 0, 1), -EINVAL);
  assert_int_equal(fy_offsets_commit(o, "", "T", 0, 1), -EINVAL);
  assert_int_equal(fy_offsets_commit(o, "CG", "", 0, 1), -EINVAL);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 1024, 1), -EINVAL); /* queues_max */
  assert_int_equal(fy_offsets_reset(o, "CG", "T", 0, -5), -EINVAL);
  assert_int_equal(fy_offsets_merge(o, "CG", "T", 0, -5, NULL), -EINVAL);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 0);
  assert_int_equal(fy_offsets_entries(o), 2);
  fy_offsets_close(o);
}

static void test_merge_never_backwards(void **state) {
  (void)state;
  fy_offsets *o = open_mem();
  bool adv = false;
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 100), 0);
  assert_int_equal(fy_offsets_merge(o, "CG", "T", 0, 50, &adv), 0);
  assert_false(adv);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 100);
  assert_int_equal(fy_offsets_merge(o, "CG", "T", 0, 100, &adv), 0);
  assert_false(adv);
  assert_int_equal(fy_offsets_merge(o, "CG", "T", 0, 150, &adv), 0);
  assert_true(adv);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 150);
  assert_int_equal(fy_offsets_merge(o, "CG", "T", 3, 0, &adv), 0); /* new queue, offset 0 */
  assert_true(adv);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 3), 0);
  assert_int_equal(fy_offsets_backward_commits(o), 0);
  fy_offsets_close(o);
}

/* RocketMQ #1094: the master is down, consumers commit to the slave; the
 * master comes back with older offsets. Neither direction of sync may
 * move an offset backwards. */
static void test_master_restart_scenario(void **state) {
  (void)state;
  fy_offsets *master = open_mem(), *slave = open_mem();
  for (uint32_t q = 0; q < 4; q++) {
    assert_int_equal(fy_offsets_commit(master, "CG", "T", q, 100 + q), 0);
    assert_int_equal(fy_offsets_commit(slave, "CG", "T", q, 100 + q), 0);
  }
  /* master down: the slave advances queues 0 and 1, and learns a new group */
  assert_int_equal(fy_offsets_commit(slave, "CG", "T", 0, 500), 0);
  assert_int_equal(fy_offsets_commit(slave, "CG", "T", 1, 600), 0);
  assert_int_equal(fy_offsets_commit(slave, "CG2", "T", 0, 7), 0);
  /* meanwhile (before it died) the master had advanced queue 2 further */
  assert_int_equal(fy_offsets_commit(master, "CG", "T", 2, 900), 0);

  /* the slave's periodic sync from the returning master must not lose 500/600 */
  size_t len;
  char *mj = fy_offsets_to_json(master, &len);
  assert_non_null(mj);
  struct fy_offsets_merge_stats st;
  char err[256];
  assert_int_equal(fy_offsets_merge_json(slave, mj, len, &st, err, sizeof err), 0);
  free(mj);
  assert_int_equal(st.added, 0);
  assert_int_equal(st.advanced, 1); /* queue 2 */
  assert_int_equal(st.kept, 3);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 0), 500);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 1), 600);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 2), 900);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 3), 103);

  /* the master syncs back from the slave: it catches up, never regresses */
  char *sj = fy_offsets_to_json(slave, &len);
  assert_int_equal(fy_offsets_merge_json(master, sj, len, &st, err, sizeof err), 0);
  free(sj);
  assert_int_equal(st.added, 1); /* CG2 */
  assert_int_equal(st.advanced, 2);
  assert_int_equal(fy_offsets_query(master, "CG", "T", 0), 500);
  assert_int_equal(fy_offsets_query(master, "CG", "T", 1), 600);
  assert_int_equal(fy_offsets_query(master, "CG", "T", 2), 900);
  assert_int_equal(fy_offsets_query(master, "CG2", "T", 0), 7);
  /* and the two now agree */
  char *a = fy_offsets_to_json(master, &len), *b = fy_offsets_to_json(slave, &len);
  json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
  assert_true(json_equal(ja, jb));
  json_decref(ja);
  json_decref(jb);
  free(a);
  free(b);
  fy_offsets_close(master);
  fy_offsets_close(slave);
}

static void test_documents_all_or_nothing(void **state) {
  (void)state;
  fy_offsets *o = open_mem();
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 5), 0);
  const char *bad[] = {
      "{\"offsetTable\":",
      "{\"offsetTable\":[]}",
      /* the first entry is fine; the second is not: nothing may change */
      "{\"offsetTable\":{\"T@CG\":{\"0\":50},\"nogroup\":{\"0\":1}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50},\"T@G@H\":{\"0\":1}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50},\"T@\":{\"0\":1}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"01\":1}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"-1\":1}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"x\":1}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"99999\":1}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"1\":-3}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"1\":1.5}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"1\":\"7\"}}}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"0\":60}}}", /* duplicate key */
      "{\"offsetTable\":{\"T@CG\":7}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    struct fy_offsets_merge_stats st = {9, 9, 9, 9, 9};
    int r = fy_offsets_merge_json(o, bad[i], strlen(bad[i]), &st, err, sizeof err);
    if (r != -FY_ECORRUPT)
      fail_msg("document %zu: %d (%s)", i, r, err);
    assert_true(strlen(err) > 0);
    assert_int_equal(st.added + st.advanced + st.kept + st.dropped + st.deleted, 0);
    assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 5);
    assert_int_equal(fy_offsets_entries(o), 1);
  }
  /* an empty table and extra fields (RocketMQ 5's file) are fine */
  const char *ok = "{\"dataVersion\":{\"counter\":3},\"offsetTable\":{},\"pullOffsetTable\":{}}";
  char err[256];
  assert_int_equal(fy_offsets_merge_json(o, ok, strlen(ok), NULL, err, sizeof err), 0);
  assert_int_equal(fy_offsets_merge_json(o, "{}", 2, NULL, err, sizeof err), 0);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 5);
  fy_offsets_close(o);
}

static void test_bounds(void **state) {
  (void)state;
  fy_offsets *o = open_mem_bounded(4, 8);
  for (uint32_t q = 0; q < 4; q++)
    assert_int_equal(fy_offsets_commit(o, "CG", "T", q, q), 0);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 4, 1), -ENOSPC);
  assert_int_equal(fy_offsets_commit(o, "CG2", "T", 0, 1), -ENOSPC);
  assert_int_equal(fy_offsets_merge(o, "CG2", "T", 0, 1, NULL), -ENOSPC);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 3, 30), 0); /* existing: fine */
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 8, 1), -EINVAL);
  assert_int_equal(fy_offsets_entries(o), 4);
  assert_int_equal(fy_offsets_query(o, "CG2", "T", 0), -1);

  /* a document that would exceed the bound is refused whole */
  const char *doc = "{\"offsetTable\":{\"T@CG\":{\"0\":100},\"T@CG3\":{\"0\":1}}}";
  char err[256] = "";
  assert_int_equal(fy_offsets_merge_json(o, doc, strlen(doc), NULL, err, sizeof err), -ENOSPC);
  assert_non_null(strstr(err, "entries_max"));
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 0);
  /* existing entries only: accepted (merge needs no new room) */
  doc = "{\"offsetTable\":{\"T@CG\":{\"0\":100,\"3\":2}}}";
  struct fy_offsets_merge_stats st;
  assert_int_equal(fy_offsets_merge_json(o, doc, strlen(doc), &st, err, sizeof err), 0);
  assert_int_equal(st.advanced, 1);
  assert_int_equal(st.kept, 1);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 100);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 3), 30);
  /* freeing room by deleting makes commits possible again */
  assert_int_equal(fy_offsets_delete_group(o, "CG"), 4);
  assert_int_equal(fy_offsets_entries(o), 0);
  assert_int_equal(fy_offsets_commit(o, "CG2", "T", 0, 1), 0);
  fy_offsets_close(o);

  struct fy_offsets_options opt;
  fy_offsets_options_init(&opt);
  assert_int_equal(opt.flush_interval_ms, 5000);
  opt.entries_max = 0;
  assert_int_equal(fy_offsets_open(NULL, NULL, &opt, &o, err, sizeof err), -EINVAL);
}

static void test_list_and_delete(void **state) {
  (void)state;
  fy_offsets *o = open_mem();
  assert_int_equal(fy_offsets_commit(o, "CG", "TB", 2, 22), 0);
  assert_int_equal(fy_offsets_commit(o, "CG", "TB", 0, 20), 0);
  assert_int_equal(fy_offsets_commit(o, "CG", "TA", 1, 11), 0);
  assert_int_equal(fy_offsets_commit(o, "CG", "TB", 10, 30), 0);
  assert_int_equal(fy_offsets_commit(o, "OTHER", "TA", 0, 99), 0);

  struct fy_offset_item *items;
  size_t n;
  assert_int_equal(fy_offsets_list_group(o, "CG", &items, &n), 0);
  assert_int_equal(n, 4);
  assert_string_equal(items[0].topic, "TA");
  assert_int_equal(items[0].queue_id, 1);
  assert_int_equal(items[0].offset, 11);
  assert_string_equal(items[1].topic, "TB");
  assert_int_equal(items[1].queue_id, 0);
  assert_int_equal(items[2].queue_id, 2);
  assert_int_equal(items[3].queue_id, 10);
  assert_int_equal(items[3].offset, 30);
  assert_true(items[3].updated_ms > 0);
  free(items);
  assert_int_equal(fy_offsets_list_group(o, "NOBODY", &items, &n), 0);
  assert_int_equal(n, 0);
  assert_null(items);

  assert_int_equal(fy_offsets_delete_topic(o, "TA"), 2);
  assert_int_equal(fy_offsets_query(o, "OTHER", "TA", 0), -1);
  assert_int_equal(fy_offsets_query(o, "CG", "TB", 0), 20);
  assert_int_equal(fy_offsets_delete_topic(o, "TA"), -FY_ENOT_FOUND);
  assert_int_equal(fy_offsets_delete_group(o, "CG"), 3);
  assert_int_equal(fy_offsets_delete_group(o, "CG"), -FY_ENOT_FOUND);
  assert_int_equal(fy_offsets_entries(o), 0);
  assert_int_equal(fy_offsets_query(o, "CG", "TB", 0), -1);
  fy_offsets_close(o);
}

static void test_json_shape(void **state) {
  (void)state;
  fy_offsets *o = open_mem();
  assert_int_equal(fy_offsets_commit(o, "CG", "TopicTest", 0, 123), 0);
  assert_int_equal(fy_offsets_commit(o, "CG", "TopicTest", 1, 456), 0);
  assert_int_equal(fy_offsets_commit(o, "%RETRY%CG_x", "%RETRY%CG_x", 0, 0), 0);
  size_t len;
  char *s = fy_offsets_to_json(o, &len);
  json_t *want = json_loads("{\"offsetTable\":{\"TopicTest@CG\":{\"0\":123,\"1\":456},"
                            "\"%RETRY%CG_x@%RETRY%CG_x\":{\"0\":0}}}",
                            0, NULL);
  json_t *got = json_loads(s, 0, NULL);
  assert_non_null(got);
  assert_true(json_equal(want, got));
  json_decref(want);
  json_decref(got);
  /* round trip into a fresh table */
  fy_offsets *p = open_mem();
  char err[256];
  assert_int_equal(fy_offsets_merge_json(p, s, len, NULL, err, sizeof err), 0);
  assert_int_equal(fy_offsets_query(p, "CG", "TopicTest", 1), 456);
  assert_int_equal(fy_offsets_query(p, "%RETRY%CG_x", "%RETRY%CG_x", 0), 0);
  assert_int_equal(fy_offsets_entries(p), 3);
  free(s);
  fy_offsets_close(o);
  fy_offsets_close(p);
}


/* ---- deletions ---- */

/* Merges from's document into to; returns the stats. */
static struct fy_offsets_merge_stats sync_from(fy_offsets *to, const fy_offsets *from) {
  size_t len;
  char *doc = fy_offsets_to_json(from, &len);
  assert_non_null(doc);
  struct fy_offsets_merge_stats st = {0};
  char err[256] = "";
  if (fy_offsets_merge_json(to, doc, len, &st, err, sizeof err) != 0)
    fail_msg("merge: %s", err);
  free(doc);
  return st;
}

/* A master and its slave holding the same offsets of CG and OTHER on T and U. */
static void pair_with_offsets(fy_offsets **master, fy_offsets **slave) {
  *master = open_mem();
  *slave = open_mem();
  const char *groups[] = {"CG", "OTHER"}, *topics[] = {"T", "U"};
  for (int g = 0; g < 2; g++)
    for (int t = 0; t < 2; t++)
      for (uint32_t q = 0; q < 2; q++)
        assert_int_equal(fy_offsets_commit(*master, groups[g], topics[t], q, 10 + q), 0);
  sync_from(*slave, *master);
  assert_int_equal(fy_offsets_entries(*slave), 8);
}

static void test_deleted_group_stays_deleted(void **state) {
  (void)state;
  fy_offsets *master, *slave;
  pair_with_offsets(&master, &slave);
  size_t len;
  char *stale = fy_offsets_to_json(slave, &len); /* a request already on its way */
  assert_int_equal(fy_offsets_deletion_epoch(master), 0);
  int64_t before = fy_clock_real_ms();
  assert_int_equal(fy_offsets_delete_group(master, "CG"), 4);
  int64_t epoch = fy_offsets_deletion_epoch(master);
  assert_true(epoch >= before);
  assert_int_equal(fy_offsets_group_deleted(master, "CG"), epoch);
  assert_int_equal(fy_offsets_tombstones(master), 1);

  /* the slave's copies, made before it saw the deletion, are not merged back */
  struct fy_offsets_merge_stats st = {0};
  char err[256];
  assert_int_equal(fy_offsets_merge_json(master, stale, len, &st, err, sizeof err), 0);
  free(stale);
  assert_int_equal(st.dropped, 4);
  assert_int_equal(st.added, 0);
  st = sync_from(master, slave);
  assert_int_equal(st.dropped, 4);
  assert_int_equal(st.kept, 4); /* OTHER's */
  assert_int_equal(fy_offsets_query(master, "CG", "T", 0), -1);
  assert_int_equal(fy_offsets_query(master, "CG", "U", 1), -1);
  assert_int_equal(fy_offsets_entries(master), 4);

  /* the master's answer carries the deletion to the slave */
  st = sync_from(slave, master);
  assert_int_equal(st.deleted, 4);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 0), -1);
  assert_int_equal(fy_offsets_query(slave, "OTHER", "T", 0), 10);
  assert_int_equal(fy_offsets_entries(slave), 4);
  assert_int_equal(fy_offsets_deletion_epoch(slave), epoch);
  assert_int_equal(fy_offsets_group_deleted(slave, "CG"), epoch);

  /* and from then on neither side brings anything back */
  for (int round = 0; round < 3; round++) {
    st = sync_from(master, slave);
    assert_int_equal(st.dropped + st.added + st.deleted, 0);
    st = sync_from(slave, master);
    assert_int_equal(st.dropped + st.added + st.deleted, 0);
  }
  assert_int_equal(fy_offsets_entries(master), 4);
  assert_int_equal(fy_offsets_entries(slave), 4);
  assert_int_equal(fy_offsets_deletion_epoch(master), epoch);
  fy_offsets_close(master);
  fy_offsets_close(slave);
}

/* A group recreated after its deletion: commits on either broker merge as
 * ever, once the slave has seen the deletion. */
static void test_recreated_group_merges_again(void **state) {
  (void)state;
  fy_offsets *master, *slave;
  pair_with_offsets(&master, &slave);
  assert_int_equal(fy_offsets_delete_group(master, "CG"), 4);
  sync_from(slave, master);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 0), -1);

  /* committed on the slave (the master away), then on the master */
  assert_int_equal(fy_offsets_commit(slave, "CG", "T", 0, 3), 0);
  struct fy_offsets_merge_stats st = sync_from(master, slave);
  assert_int_equal(st.added, 1);
  assert_int_equal(st.dropped, 0);
  assert_int_equal(fy_offsets_query(master, "CG", "T", 0), 3);
  assert_int_equal(fy_offsets_commit(master, "CG", "U", 1, 7), 0);
  st = sync_from(slave, master);
  assert_int_equal(st.deleted, 0); /* the same deletion is not applied twice */
  assert_int_equal(fy_offsets_query(slave, "CG", "U", 1), 7);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 0), 3);

  /* deleted again: a newer epoch, applied again */
  int64_t first = fy_offsets_deletion_epoch(master);
  assert_int_equal(fy_offsets_delete_group(master, "CG"), 2);
  assert_true(fy_offsets_deletion_epoch(master) > first);
  st = sync_from(master, slave);
  assert_int_equal(st.dropped, 2);
  st = sync_from(slave, master);
  assert_int_equal(st.deleted, 2);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 0), -1);
  assert_int_equal(fy_offsets_tombstones(master), 1);
  fy_offsets_close(master);
  fy_offsets_close(slave);
}

static void test_deleted_topic_stays_deleted(void **state) {
  (void)state;
  fy_offsets *master, *slave;
  pair_with_offsets(&master, &slave);
  assert_int_equal(fy_offsets_delete_topic(master, "T"), 4); /* both groups' */
  assert_int_equal(fy_offsets_topic_deleted(master, "T"), fy_offsets_deletion_epoch(master));
  assert_int_equal(fy_offsets_group_deleted(master, "T"), 0); /* a topic, not a group */
  struct fy_offsets_merge_stats st = sync_from(master, slave);
  assert_int_equal(st.dropped, 4);
  assert_int_equal(fy_offsets_query(master, "CG", "T", 0), -1);
  assert_int_equal(fy_offsets_query(master, "CG", "U", 0), 10);
  st = sync_from(slave, master);
  assert_int_equal(st.deleted, 4);
  assert_int_equal(fy_offsets_query(slave, "OTHER", "T", 1), -1);
  assert_int_equal(fy_offsets_query(slave, "OTHER", "U", 1), 11);
  st = sync_from(master, slave);
  assert_int_equal(st.dropped + st.added, 0);

  /* deleting what this broker has no offsets for is still recorded: the
   * other broker may hold some */
  assert_int_equal(fy_offsets_commit(slave, "CG", "V", 0, 5), 0);
  assert_int_equal(fy_offsets_delete_topic(master, "V"), -FY_ENOT_FOUND);
  assert_int_equal(fy_offsets_tombstones(master), 2);
  assert_int_equal(fy_offsets_delete_group(master, "bad name!"), -EINVAL);
  assert_int_equal(fy_offsets_delete_topic(master, ""), -EINVAL);
  assert_int_equal(fy_offsets_tombstones(master), 2);
  st = sync_from(master, slave);
  assert_int_equal(st.dropped, 1);
  sync_from(slave, master);
  assert_int_equal(fy_offsets_query(slave, "CG", "V", 0), -1);
  fy_offsets_close(master);
  fy_offsets_close(slave);
}

/* The other broker runs a Ferry that knows no tombstones. */
static void test_peer_without_tombstones(void **state) {
  (void)state;
  fy_offsets *master = open_mem();
  for (uint32_t q = 0; q < 2; q++) {
    assert_int_equal(fy_offsets_commit(master, "CG", "T", q, 10), 0);
    assert_int_equal(fy_offsets_commit(master, "KEEP", "T", q, 10), 0);
  }
  assert_int_equal(fy_offsets_delete_group(master, "CG"), 2);
  /* an old slave's document: no epoch, so all its CG offsets predate the
   * deletion; KEEP's merge as ever */
  const char *old = "{\"offsetTable\":{\"T@CG\":{\"0\":50,\"1\":50},\"T@KEEP\":{\"0\":20}}}";
  struct fy_offsets_merge_stats st = {0};
  char err[256];
  assert_int_equal(fy_offsets_merge_json(master, old, strlen(old), &st, err, sizeof err), 0);
  assert_int_equal(st.dropped, 2);
  assert_int_equal(st.advanced, 1);
  assert_int_equal(fy_offsets_query(master, "CG", "T", 0), -1);
  assert_int_equal(fy_offsets_query(master, "KEEP", "T", 0), 20);

  /* what an old peer reads of the new document: offsetTable as before,
   * the deletions under a key of their own, which it ignores */
  size_t len;
  char *s = fy_offsets_to_json(master, &len);
  json_t *doc = json_loads(s, 0, NULL);
  free(s);
  assert_non_null(doc);
  assert_int_equal(json_object_size(doc), 2);
  json_t *table = json_object_get(doc, "offsetTable");
  assert_int_equal(json_object_size(table), 1);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(table, "T@KEEP"), "0")), 20);
  json_t *d = json_object_get(doc, "deletedOffsets");
  int64_t epoch = fy_offsets_deletion_epoch(master);
  assert_int_equal(json_integer_value(json_object_get(d, "epoch")), epoch);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(d, "groups"), "CG")), epoch);
  assert_int_equal(json_object_size(json_object_get(d, "topics")), 0);
  json_decref(doc);

  /* an old master's document (no deletions) merges into a new slave as ever */
  fy_offsets *slave = open_mem();
  assert_int_equal(fy_offsets_merge_json(slave, old, strlen(old), &st, err, sizeof err), 0);
  assert_int_equal(fy_offsets_query(slave, "CG", "T", 1), 50);
  assert_int_equal(fy_offsets_deletion_epoch(slave), 0);
  fy_offsets_close(slave);
  fy_offsets_close(master);
}

static void test_bad_deletions_change_nothing(void **state) {
  (void)state;
  fy_offsets *o = open_mem_bounded(1u << 20, 1024);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 5), 0);
  const char *bad[] = {
      "{\"offsetTable\":{\"T@CG\":{\"0\":50}},\"deletedOffsets\":[]}",
      "{\"offsetTable\":{\"T@CG\":{\"0\":50}},\"deletedOffsets\":{\"groups\":{\"CG\":1}}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":-1}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":9223372036854775807}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":5,\"groups\":{\"CG\":6}}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":5,\"groups\":{\"CG\":0}}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":5,\"groups\":{\"CG\":\"3\"}}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":5,\"groups\":{\"C@G\":3}}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":5,\"topics\":{\"\":3}}}",
      "{\"offsetTable\":{},\"deletedOffsets\":{\"epoch\":5,\"topics\":[\"T\"]}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    int r = fy_offsets_merge_json(o, bad[i], strlen(bad[i]), NULL, err, sizeof err);
    if (r != -FY_ECORRUPT)
      fail_msg("document %zu: %d (%s)", i, r, err);
    assert_non_null(strstr(err, "deletedOffsets"));
    assert_int_equal(fy_offsets_query(o, "CG", "T", 0), 5);
    assert_int_equal(fy_offsets_deletion_epoch(o), 0);
    assert_int_equal(fy_offsets_tombstones(o), 0);
  }
  /* a good one applies: CG deleted at 4, and nothing of CG in the document */
  const char *ok = "{\"offsetTable\":{\"T@X\":{\"0\":1}},"
                   "\"deletedOffsets\":{\"epoch\":5,\"groups\":{\"CG\":4},\"topics\":{}}}";
  char err[256];
  struct fy_offsets_merge_stats st = {0};
  assert_int_equal(fy_offsets_merge_json(o, ok, strlen(ok), &st, err, sizeof err), 0);
  assert_int_equal(st.deleted, 1);
  assert_int_equal(st.added, 1);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), -1);
  assert_int_equal(fy_offsets_deletion_epoch(o), 5);
  fy_offsets_close(o);
}

static fy_offsets *open_tomb_bounded(uint32_t tombstones_max, uint64_t ttl_ms) {
  struct fy_offsets_options opt;
  fy_offsets_options_init(&opt);
  opt.tombstones_max = tombstones_max;
  opt.tombstone_ttl_ms = ttl_ms;
  fy_offsets *o = NULL;
  char err[256];
  assert_int_equal(fy_offsets_open(NULL, NULL, &opt, &o, err, sizeof err), 0);
  return o;
}

static void test_tombstone_bounds(void **state) {
  (void)state;
  struct fy_offsets_options opt;
  fy_offsets_options_init(&opt);
  assert_int_equal(opt.tombstones_max, 10000);
  assert_int_equal(opt.tombstone_ttl_ms, 7ull * 24 * 3600 * 1000);

  /* at most tombstones_max: the oldest deletions are forgotten first */
  fy_offsets *o = open_tomb_bounded(3, 3600 * 1000);
  char name[16];
  int64_t last = 0;
  for (int i = 0; i < 5; i++) {
    snprintf(name, sizeof name, "G%d", i);
    assert_int_equal(fy_offsets_delete_group(o, name), -FY_ENOT_FOUND);
    assert_true(fy_offsets_deletion_epoch(o) > last); /* strictly growing, even within a ms */
    last = fy_offsets_deletion_epoch(o);
  }
  assert_int_equal(fy_offsets_tombstones(o), 3);
  assert_int_equal(fy_offsets_group_deleted(o, "G0"), 0);
  assert_int_equal(fy_offsets_group_deleted(o, "G1"), 0);
  assert_int_equal(fy_offsets_group_deleted(o, "G4"), last);
  /* a document with more deletions than the bound is refused whole */
  const char *doc = "{\"offsetTable\":{\"T@X\":{\"0\":1}},\"deletedOffsets\":{\"epoch\":9,"
                    "\"groups\":{\"A\":1,\"B\":2},\"topics\":{\"C\":3,\"D\":4}}}";
  char err[256] = "";
  assert_int_equal(fy_offsets_merge_json(o, doc, strlen(doc), NULL, err, sizeof err), -ENOSPC);
  assert_non_null(strstr(err, "tombstones_max"));
  assert_int_equal(fy_offsets_query(o, "X", "T", 0), -1);

  /* forgotten ttl after their epoch; the epoch itself stays */
  int64_t g3 = fy_offsets_group_deleted(o, "G3");
  fy_offsets_trim_tombstones(o, g3 + 3600 * 1000); /* G3 just not expired, G2 (earlier) is */
  assert_int_equal(fy_offsets_tombstones(o), 2);
  assert_int_equal(fy_offsets_group_deleted(o, "G2"), 0);
  assert_int_equal(fy_offsets_group_deleted(o, "G3"), g3);
  fy_offsets_trim_tombstones(o, last + 3600 * 1000 + 1);
  assert_int_equal(fy_offsets_tombstones(o), 0);
  assert_int_equal(fy_offsets_deletion_epoch(o), last);
  size_t len;
  char *s = fy_offsets_to_json(o, &len);
  assert_non_null(strstr(s, "\"epoch\":"));
  free(s);
  fy_offsets_close(o);

  opt.tombstones_max = 0;
  assert_int_equal(fy_offsets_open(NULL, NULL, &opt, &o, err, sizeof err), -EINVAL);
  fy_offsets_options_init(&opt);
  opt.tombstone_ttl_ms = 0;
  assert_int_equal(fy_offsets_open(NULL, NULL, &opt, &o, err, sizeof err), -EINVAL);
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
  snprintf(f->root, sizeof f->root, "%s", fy_test_mkdtemp("offsets"));
  snprintf(f->file, sizeof f->file, "%s/config/consumerOffset.json", f->root);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  uv_run(&f->loop, UV_RUN_DEFAULT); /* a closed table's last save ends before aio (metafile.h) */
  assert_int_equal(fy_aio_pending(f->aio), 0);
  fy_aio_close(f->aio);
  assert_int_equal(fy_test_loop_finish(&f->loop), 0); /* the timer was closed too */
  fy_test_rmtree(f->root);
  free(f);
  return 0;
}

static int open_disk(struct fixture *f, uint64_t interval_ms, fy_offsets **o, char *err,
                     size_t errlen) {
  struct fy_offsets_options opt;
  fy_offsets_options_init(&opt);
  opt.root_dir = f->root;
  opt.flush_interval_ms = interval_ms;
  return fy_offsets_open(&f->loop, f->aio, &opt, o, err, errlen);
}

static fy_offsets *reopen(struct fixture *f, uint64_t interval_ms) {
  fy_offsets *o = NULL;
  char err[512] = "";
  if (open_disk(f, interval_ms, &o, err, sizeof err) != 0)
    fail_msg("open: %s", err);
  return o;
}

/* Closes o and runs the loop until its timer's close callback freed it. */
static void close_wait(struct fixture *f, fy_offsets *o) {
  fy_offsets_close(o);
  uv_run(&f->loop, UV_RUN_NOWAIT);
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

static int flush_wait(struct fixture *f, fy_offsets *o) {
  struct done d = {0};
  assert_int_equal(fy_offsets_flush(o, on_done, &d), 0);
  assert_false(d.done);
  assert_true(fy_test_run_until(&f->loop, &d.done, DEADLINE_MS));
  return d.status;
}

/* Runs the loop for ms milliseconds. */
static void run_for(struct fixture *f, uint64_t ms) {
  bool never = false;
  fy_test_run_until(&f->loop, &never, ms);
}

/* The offset for (CG, T, queue) in the file on disk, or -1. */
static int64_t file_offset(struct fixture *f, uint32_t queue) {
  char *buf;
  size_t len;
  if (fy_metafile_load(f->file, &buf, &len) != 0)
    return -1;
  json_t *root = json_loadb(buf, len, 0, NULL);
  free(buf);
  assert_non_null(root);
  char q[12];
  snprintf(q, sizeof q, "%u", queue);
  json_t *v = json_object_get(json_object_get(json_object_get(root, "offsetTable"), "T@CG"), q);
  int64_t r = v ? (int64_t)json_integer_value(v) : -1;
  json_decref(root);
  return r;
}

static void test_flush_on_demand_and_reopen(void **state) {
  struct fixture *f = *state;
  fy_offsets *o = reopen(f, 3600000); /* the timer will not fire during the test */
  for (uint32_t q = 0; q < 8; q++)
    assert_int_equal(fy_offsets_commit(o, "CG", "T", q, 1000 + q), 0);
  assert_int_equal(fy_offsets_commit(o, "CG2", "T", 0, 5), 0);
  assert_true(fy_offsets_dirty(o));
  assert_int_equal(flush_wait(f, o), 0);
  assert_false(fy_offsets_dirty(o));
  assert_int_equal(fy_offsets_persist_status(o), 0);
  assert_int_equal(file_offset(f, 7), 1007);
  close_wait(f, o);

  o = reopen(f, 3600000);
  assert_int_equal(fy_offsets_entries(o), 9);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 3), 1003);
  assert_int_equal(fy_offsets_query(o, "CG2", "T", 0), 5);
  assert_false(fy_offsets_dirty(o)); /* loaded == on disk */
  close_wait(f, o);
}

static void test_flush_on_timer(void **state) {
  struct fixture *f = *state;
  fy_offsets *o = reopen(f, 30);
  /* nothing changed: the timer writes nothing */
  run_for(f, 150);
  assert_int_equal(fy_offsets_writes(o), 0);

  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 42), 0);
  for (int i = 0; i < 400 && file_offset(f, 0) != 42; i++)
    run_for(f, 10);
  assert_int_equal(file_offset(f, 0), 42);
  assert_false(fy_offsets_dirty(o));
  uint64_t w = fy_offsets_writes(o);
  assert_true(w >= 1);
  /* idle again: no more writes */
  run_for(f, 200);
  assert_int_equal(fy_offsets_writes(o), w);
  /* a merge that changes nothing leaves it clean */
  assert_int_equal(fy_offsets_merge(o, "CG", "T", 0, 1, NULL), 0);
  assert_false(fy_offsets_dirty(o));
  /* a change is picked up by a later tick */
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 43), 0);
  for (int i = 0; i < 400 && file_offset(f, 0) != 43; i++)
    run_for(f, 10);
  assert_int_equal(file_offset(f, 0), 43);
  close_wait(f, o);
}

static void test_failed_timed_save_retried(void **state) {
  struct fixture *f = *state;
  fy_offsets *o = reopen(f, 30);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 1), 0);
  assert_int_equal(flush_wait(f, o), 0);

  fy_aio_inject_fault(f->aio, FY_AIO_WRITE, 0, 1, -EIO);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 2), 0);
  for (int i = 0; i < 400 && fy_offsets_persist_status(o) == 0; i++)
    run_for(f, 10);
  assert_int_equal(fy_offsets_persist_status(o), -EIO);
  /* The failure is not taken as success: with no further change, only the
   * table being marked dirty again gets 2 to disk at a later tick. */
  for (int i = 0; i < 400 && (file_offset(f, 0) != 2 || fy_offsets_persist_status(o) != 0); i++)
    run_for(f, 10);
  assert_int_equal(file_offset(f, 0), 2);
  assert_int_equal(fy_offsets_persist_status(o), 0);
  close_wait(f, o);
}

static void test_flush_fault_reported(void **state) {
  struct fixture *f = *state;
  fy_offsets *o = reopen(f, 3600000);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 1), 0);
  assert_int_equal(flush_wait(f, o), 0);
  assert_int_equal(fy_offsets_commit(o, "CG", "T", 0, 2), 0);
  fy_aio_inject_fault(f->aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  assert_int_equal(flush_wait(f, o), -EIO);
  assert_int_equal(fy_offsets_persist_status(o), -EIO);
  assert_true(fy_offsets_dirty(o)); /* still to be written */
  assert_int_equal(file_offset(f, 0), 1);
  assert_int_equal(flush_wait(f, o), 0);
  assert_int_equal(file_offset(f, 0), 2);
  close_wait(f, o);
}

static void test_corrupt_file_is_an_error(void **state) {
  struct fixture *f = *state;
  fy_offsets *o = reopen(f, 3600000); /* creates <root>/config */
  close_wait(f, o);
  const char *docs[] = {"{\"offsetTable\":{\"T@CG\":{\"0\":12", /* torn */
                        "{\"offsetTable\":{\"T@CG\":{\"0\":-4}}}"};
  for (size_t i = 0; i < 2; i++) {
    FILE *fp = fopen(f->file, "w");
    assert_non_null(fp);
    fputs(docs[i], fp);
    fclose(fp);
    char err[512] = "";
    o = NULL;
    assert_int_equal(open_disk(f, 5000, &o, err, sizeof err), -FY_ECORRUPT);
    assert_null(o);
    assert_non_null(strstr(err, "consumerOffset.json"));
  }
}

/* Whether the file on disk holds a tombstone for group. */
static bool file_deleted_group(struct fixture *f, const char *group) {
  char *buf;
  size_t len;
  if (fy_metafile_load(f->file, &buf, &len) != 0)
    return false;
  json_t *root = json_loadb(buf, len, 0, NULL);
  free(buf);
  bool r = json_object_get(json_object_get(json_object_get(root, "deletedOffsets"), "groups"),
                           group) != NULL;
  json_decref(root);
  return r;
}

/* A deletion is saved at once (not at the next tick), and a restarted
 * master still refuses the slave's copy of what it deleted. */
static void test_deletion_saved_at_once_and_reloaded(void **state) {
  struct fixture *f = *state;
  fy_offsets *o = reopen(f, 3600000); /* the timer will not save during the test */
  fy_offsets *slave = open_mem();
  for (uint32_t q = 0; q < 2; q++) {
    assert_int_equal(fy_offsets_commit(o, "CG", "T", q, 9), 0);
    assert_int_equal(fy_offsets_commit(slave, "CG", "T", q, 9), 0);
  }
  assert_int_equal(flush_wait(f, o), 0);
  assert_int_equal(fy_offsets_delete_group(o, "CG"), 2);
  int64_t epoch = fy_offsets_deletion_epoch(o);
  for (int i = 0; i < 2000 && !file_deleted_group(f, "CG"); i++)
    run_for(f, 10);
  assert_true(file_deleted_group(f, "CG"));
  assert_int_equal(file_offset(f, 0), -1);
  close_wait(f, o);

  o = reopen(f, 3600000);
  assert_int_equal(fy_offsets_deletion_epoch(o), epoch);
  assert_int_equal(fy_offsets_group_deleted(o, "CG"), epoch);
  assert_false(fy_offsets_dirty(o));
  struct fy_offsets_merge_stats st = sync_from(o, slave);
  assert_int_equal(st.dropped, 2);
  assert_int_equal(fy_offsets_query(o, "CG", "T", 0), -1);
  fy_offsets_close(slave);
  close_wait(f, o);
}

static void test_memory_only_flush(void **state) {
  (void)state;
  fy_offsets *o = open_mem();
  struct done d = {0};
  assert_int_equal(fy_offsets_flush(o, on_done, &d), -EINVAL);
  assert_int_equal(fy_offsets_writes(o), 0);
  fy_offsets_close(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_commit_query_reset),
      cmocka_unit_test(test_merge_never_backwards),
      cmocka_unit_test(test_master_restart_scenario),
      cmocka_unit_test(test_documents_all_or_nothing),
      cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_list_and_delete),
      cmocka_unit_test(test_json_shape),
      cmocka_unit_test(test_deleted_group_stays_deleted),
      cmocka_unit_test(test_recreated_group_merges_again),
      cmocka_unit_test(test_deleted_topic_stays_deleted),
      cmocka_unit_test(test_peer_without_tombstones),
      cmocka_unit_test(test_bad_deletions_change_nothing),
      cmocka_unit_test(test_tombstone_bounds),
      cmocka_unit_test(test_memory_only_flush),
      cmocka_unit_test_setup_teardown(test_flush_on_demand_and_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_on_timer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_timed_save_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_fault_reported, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_file_is_an_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deletion_saved_at_once_and_reloaded, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
