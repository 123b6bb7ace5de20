/* The broker's config keys (see broker_config.h and conf/broker.conf). */
#include "broker/broker_config.h"

#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"

#define F(field) offsetof(struct fy_broker_config, field)
#define S(field) sizeof(((struct fy_broker_config *)0)->field)

const struct fy_config_key fy_broker_config_keys[] = {
    {"brokerClusterName", FY_CFG_STRING, F(cluster), S(cluster), 0, 0, "DefaultCluster", NULL},
    {"brokerName", FY_CFG_STRING, F(broker_name), S(broker_name), 0, 0, "broker-a", NULL},
    {"brokerId", FY_CFG_U64, F(broker_id), 0, 0, 1024, "0", NULL},
    {"namesrvAddr", FY_CFG_STRING, F(namesrv_addr), S(namesrv_addr), 0, 0, "", NULL},
    {"brokerIP1", FY_CFG_STRING, F(broker_ip), S(broker_ip), 0, 0, "", NULL},
    {"listenAddress", FY_CFG_STRING, F(listen_address), S(listen_address), 0, 0, "0.0.0.0", NULL},
    {"listenPort", FY_CFG_U32, F(listen_port), 0, 0, 65535, "10911", NULL},
    {"haListenPort", FY_CFG_U32, F(ha_listen_port), 0, 0, 65535, "0", NULL},
    {"haMasterAddress", FY_CFG_STRING, F(ha_master_address), S(ha_master_address), 0, 0, "", NULL},
    {"brokerRole", FY_CFG_ENUM, F(role), 0, 0, 0, "ASYNC_MASTER",
     "ASYNC_MASTER|SYNC_MASTER|SLAVE"},
    {"brokerPermission", FY_CFG_U32, F(broker_permission), 0, 0, 7, "6", NULL},
    {"autoCreateTopicEnable", FY_CFG_BOOL, F(auto_create_topic), 0, 0, 0, "true", NULL},
    {"defaultTopicQueueNums", FY_CFG_U32, F(default_topic_queues), 0, 1, 1024, "8", NULL},
    {"autoCreateSubscriptionGroup", FY_CFG_BOOL, F(auto_create_group), 0, 0, 0, "true", NULL},
    {"registerNameServerPeriod", FY_CFG_U32, F(register_period_ms), 0, 1000, 60000, "30000", NULL},
    {"flushConsumerOffsetInterval", FY_CFG_U32, F(flush_offsets_interval_ms), 0, 100, 600000,
     "5000", NULL},
    {"clientChannelExpiredTime", FY_CFG_U32, F(client_expiry_ms), 0, 1000, 3600000, "120000",
     NULL},
    {"longPollingEnable", FY_CFG_BOOL, F(long_polling), 0, 0, 0, "true", NULL},
    {"maxHeldPulls", FY_CFG_U32, F(max_held_pulls), 0, 1, 10000000, "100000", NULL},
    {"maxTransferCountOnMessageInMemory", FY_CFG_U32, F(pull_max_msgs), 0, 1, 4096, "32", NULL},
    {"maxTransferBytesOnMessageInMemory", FY_CFG_U32, F(pull_max_bytes), 0, 1024, 64u << 20,
     "262144", NULL},
    {"slaveReadEnable", FY_CFG_BOOL, F(slave_read_enable), 0, 0, 0, "false", NULL},
    {"accessMessageInMemoryMaxRatio", FY_CFG_U32, F(memory_max_ratio), 0, 1, 100, "40", NULL},
    {"slaveReadBehindBytes", FY_CFG_U64, F(slave_read_behind_bytes), 0, 0, UINT64_MAX, "0", NULL},
    {"syncFlushTimeout", FY_CFG_U32, F(sync_flush_timeout_ms), 0, 10, 600000, "5000", NULL},
    {"slaveTimeout", FY_CFG_U32, F(slave_timeout_ms), 0, 10, 600000, "3000", NULL},
    {"maxFrameSize", FY_CFG_U32, F(max_frame_bytes), 0, 65536, 1u << 30, "16777216", NULL},
    {"maxConnections", FY_CFG_U32, F(max_conns), 0, 1, 1000000, "10000", NULL},
    {"pidFile", FY_CFG_STRING, F(pid_file), S(pid_file), 0, 0, "", NULL},
    {"haSendHeartbeatInterval", FY_CFG_U32, F(ha_heartbeat_ms), 0, 50, 60000, "1000", NULL},
    {"haHousekeepingInterval", FY_CFG_U32, F(ha_timeout_ms), 0, 200, 600000, "5000", NULL},
    {"haTransferBatchSize", FY_CFG_U32, F(ha_batch_bytes), 0, 4096, 64u << 20, "262144", NULL},
    {"haSlaveFallbehindMax", FY_CFG_U64, F(ha_fallbehind_max), 0, 1, UINT64_MAX, "268435456",
     NULL},
    {"haSyncAckOn", FY_CFG_ENUM, F(ha_ack_on), 0, 0, 0, "received", "received|durable"},
    {"slaveSyncMetadataInterval", FY_CFG_U32, F(metadata_sync_ms), 0, 100, 600000, "3000", NULL},
    {"messageDelayLevel", FY_CFG_STRING, F(delay_levels), S(delay_levels), 0, 0,
     "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h", NULL},
    FY_CFG_END,
};

_Static_assert(sizeof(enum fy_broker_role) == sizeof(int), "ENUM keys are stored as int");

void fy_broker_settings_sections(struct fy_broker_settings *s, struct fy_config_section out[2]) {
  out[0].keys = fy_broker_config_keys;
  out[0].obj = &s->broker;
  out[1].keys = fy_store_config_keys;
  out[1].obj = &s->store;
}

void fy_broker_settings_defaults(struct fy_broker_settings *s) {
  memset(s, 0, sizeof *s);
  fy_store_config_defaults(&s->store);
  struct fy_config_section sec[2];
  fy_broker_settings_sections(s, sec);
  fy_config_defaults(sec, 1);
}

int fy_delay_levels_parse(const char *spec, uint64_t *out_ms, size_t max) {
  size_t n = 0;
  const char *p = spec;
  for (;;) {
    while (*p == ' ')
      p++;
    if (!*p)
      break;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    uint64_t unit = *end == 's' ? 1000 : *end == 'm' ? 60000 : *end == 'h' ? 3600000
                  : *end == 'd' ? 86400000 : 0;
    if (end == p || !unit || v == 0 || v > 365ull * 86400 || (end[1] && end[1] != ' ') || n == max)
      return -1;
    out_ms[n++] = v * unit;
    p = end + 1;
  }
  return n ? (int)n : -1;
}

int fy_broker_settings_check(const struct fy_broker_settings *s, char *err, size_t errlen) {
  const struct fy_broker_config *b = &s->broker;
  uint64_t levels[FY_DELAY_LEVELS_MAX];
  if (fy_delay_levels_parse(b->delay_levels, levels, FY_DELAY_LEVELS_MAX) < 0) {
    snprintf(err, errlen,
             "messageDelayLevel: '%s' is not 1 to %d delays like \"1s 5s 10s 1m 2h\" "
             "(a positive number with s, m, h or d each, separated by spaces)",
             b->delay_levels, FY_DELAY_LEVELS_MAX);
    return -FY_ECONFIG;
  }
  uint32_t hours;
  if (fy_store_parse_hours(s->store.delete_when, &hours)) {
    snprintf(err, errlen, "deleteWhen: '%s' is not hours 0-23 separated by ';' (like \"04\" or "
             "\"04;16\")", s->store.delete_when);
    return -FY_ECONFIG;
  }
  if (!b->broker_name[0] || !b->cluster[0]) {
    snprintf(err, errlen, "brokerName and brokerClusterName must not be empty");
    return -FY_ECONFIG;
  }
  if (b->role == FY_ROLE_SLAVE && b->broker_id == 0) {
    snprintf(err, errlen, "brokerRole=SLAVE needs brokerId > 0 (brokerId=0 is the master)");
    return -FY_ECONFIG;
  }
  if (b->role != FY_ROLE_SLAVE && b->broker_id != 0) {
    snprintf(err, errlen, "brokerRole=%s needs brokerId=0 (slaves have brokerId > 0)",
             b->role == FY_ROLE_SYNC_MASTER ? "SYNC_MASTER" : "ASYNC_MASTER");
    return -FY_ECONFIG;
  }
  if (b->ha_listen_port && b->ha_listen_port == b->listen_port) {
    snprintf(err, errlen, "haListenPort must differ from listenPort");
    return -FY_ECONFIG;
  }
  if (s->store.write_buffer_size < s->store.max_message_size + 64 * 1024) {
    snprintf(err, errlen, "writeBufferSize (%u) must exceed maxMessageSize (%u) by at least 64 KiB",
             s->store.write_buffer_size, s->store.max_message_size);
    return -FY_ECONFIG;
  }
  return 0;
}
