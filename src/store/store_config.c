/*
 * The store's configuration keys: RocketMQ's names and defaults, plus a few
 * of Ferry's own (ioBackend, writeBufferSize, writeBufferCount,
 * maxPendingPuts). conf/broker.conf documents each one; a unit test checks
 * that every key here appears there.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/err.h"
#include "store/store.h"

#define F(field) offsetof(struct fy_store_config, field)
#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)

const struct fy_config_key fy_store_config_keys[] = {
    {"storePathRootDir", FY_CFG_STRING, F(root_dir), sizeof(((struct fy_store_config *)0)->root_dir),
     0, 0, "", NULL}, /* empty: $HOME/store, set by fy_store_config_defaults */
    {"mappedFileSizeCommitLog", FY_CFG_U64, F(commitlog_segment_size), 0, 64 * 1024, 64 * GiB,
     "1073741824", NULL},
    {"mappedFileSizeConsumeQueue", FY_CFG_U32, F(cq_file_size), 0, 20 * 16, 20u * 50000000u,
     "6000000", NULL},
    {"flushDiskType", FY_CFG_ENUM, F(flush_disk_type), 0, 0, 0, "ASYNC_FLUSH",
     "ASYNC_FLUSH|SYNC_FLUSH"},
    {"flushIntervalCommitLog", FY_CFG_U32, F(flush_interval_ms), 0, 1, 60000, "500", NULL},
    {"flushIntervalConsumeQueue", FY_CFG_U32, F(flush_cq_interval_ms), 0, 1, 60000, "1000", NULL},
    {"commitLogPageCacheMaxBytes", FY_CFG_U64, F(page_cache_max), 0, 0, UINT64_MAX, "0", NULL},
    {"commitLogWritebackBytes", FY_CFG_U32, F(writeback_bytes), 0, 0, 1024 * MiB, "1048576", NULL},
    {"maxMessageSize", FY_CFG_U32, F(max_message_size), 0, 1024, 64 * MiB, "4194304", NULL},
    {"messageIndexEnable", FY_CFG_BOOL, F(index_enable), 0, 0, 0, "true", NULL},
    {"maxHashSlotNum", FY_CFG_U32, F(index_slots), 0, 16, 50000000, "5000000", NULL},
    {"maxIndexNum", FY_CFG_U32, F(index_entries), 0, 16, 200000000, "20000000", NULL},
    {"fileReservedTime", FY_CFG_U32, F(file_reserved_hours), 0, 0, 24 * 365 * 10, "72", NULL},
    {"deleteWhen", FY_CFG_STRING, F(delete_when), sizeof(((struct fy_store_config *)0)->delete_when),
     0, 0, "04", NULL},
    {"diskMaxUsedSpaceRatio", FY_CFG_U32, F(disk_max_used_ratio), 0, 10, 95, "75", NULL},
    {"diskSpaceWarningLevelRatio", FY_CFG_U32, F(disk_full_ratio), 0, 10, 99, "90", NULL},
    {"cleanFileForciblyEnable", FY_CFG_BOOL, F(clean_forcibly), 0, 0, 0, "false", NULL},
    {"cleanResourceInterval", FY_CFG_U32, F(clean_interval_ms), 0, 100, 3600000, "10000", NULL},
    {"ioBackend", FY_CFG_ENUM, F(io_backend), 0, 0, 0, "auto", "auto|uring|threads"},
    {"writeBufferSize", FY_CFG_U32, F(write_buffer_size), 0, 1 * MiB, 1024 * MiB, "8388608", NULL},
    {"writeBufferCount", FY_CFG_U32, F(write_buffers), 0, 2, 64, "4", NULL},
    {"maxPendingPuts", FY_CFG_U32, F(max_pending_puts), 0, 16, 16777216, "65536", NULL},
    FY_CFG_END,
};

_Static_assert(sizeof(enum fy_aio_backend) == sizeof(int), "ENUM keys are stored as int");

void fy_store_config_defaults(struct fy_store_config *c) {
  memset(c, 0, sizeof *c);
  struct fy_config_section sec = {fy_store_config_keys, c};
  fy_config_defaults(&sec, 1);
  const char *home = getenv("HOME");
  snprintf(c->root_dir, sizeof c->root_dir, "%s/store", home && *home ? home : "/tmp");
}

int fy_store_parse_hours(const char *spec, uint32_t *mask) {
  uint32_t m = 0;
  const char *p = spec;
  while (*p) {
    int h = 0, digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
      h = h * 10 + (*p - '0');
    if (digits == 0 || digits > 2 || h > 23)
      return -FY_ECONFIG;
    m |= 1u << h;
    if (*p && (*p++ != ';' || *p == '\0'))
      return -FY_ECONFIG;
  }
  *mask = m;
  return 0;
}
