/*
 * The broker's configuration: RocketMQ's key names and defaults, plus a few
 * of Ferry's own. The store's keys live in store_config.c; a broker reads
 * both tables from one file (conf/broker.conf documents every key).
 */
#ifndef FY_BROKER_BROKER_CONFIG_H
#define FY_BROKER_BROKER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "store/store.h"

enum fy_broker_role { FY_ROLE_ASYNC_MASTER, FY_ROLE_SYNC_MASTER, FY_ROLE_SLAVE };

struct fy_broker_config {
  char cluster[128];                 /* brokerClusterName: DefaultCluster */
  char broker_name[128];             /* brokerName: broker-a */
  uint64_t broker_id;                /* brokerId: 0 (master); > 0 for slaves */
  char namesrv_addr[1024];           /* namesrvAddr: "" (host:port;host:port) */
  char broker_ip[64];                /* brokerIP1: "" = first non-loopback IPv4 */
  char listen_address[64];           /* listenAddress: 0.0.0.0 */
  uint32_t listen_port;              /* listenPort: 10911 */
  uint32_t ha_listen_port;           /* haListenPort: 0 = listenPort + 1 */
  char ha_master_address[128];       /* haMasterAddress: "" = learn from the name server */
  int role;                          /* brokerRole: ASYNC_MASTER */
  uint32_t broker_permission;        /* brokerPermission: 6 */
  bool auto_create_topic;            /* autoCreateTopicEnable: true */
  uint32_t default_topic_queues;     /* defaultTopicQueueNums: 8 */
  bool auto_create_group;            /* autoCreateSubscriptionGroup: true */
  uint32_t register_period_ms;       /* registerNameServerPeriod: 30000 */
  uint32_t flush_offsets_interval_ms; /* flushConsumerOffsetInterval: 5000 */
  uint32_t client_expiry_ms;         /* clientChannelExpiredTime: 120000 */
  bool long_polling;                 /* longPollingEnable: true */
  uint32_t max_held_pulls;           /* maxHeldPulls: 100000 */
  uint32_t pull_max_msgs;            /* maxTransferCountOnMessageInMemory: 32 */
  uint32_t pull_max_bytes;           /* maxTransferBytesOnMessageInMemory: 262144 */
  bool slave_read_enable;            /* slaveReadEnable: false */
  uint32_t memory_max_ratio;         /* accessMessageInMemoryMaxRatio: 40 */
  uint64_t slave_read_behind_bytes;  /* slaveReadBehindBytes: 0 = use the ratio */
  uint32_t sync_flush_timeout_ms;    /* syncFlushTimeout: 5000 */
  uint32_t slave_timeout_ms;         /* slaveTimeout: 3000 */
  uint32_t max_frame_bytes;          /* maxFrameSize: 16777216 */
  uint32_t max_conns;                /* maxConnections: 10000 */
  char pid_file[512];                /* pidFile: "" = <storePathRootDir>/broker.pid */
  uint32_t ha_heartbeat_ms;          /* haSendHeartbeatInterval: 1000 */
  uint32_t ha_timeout_ms;            /* haHousekeepingInterval: 5000 */
  uint32_t ha_batch_bytes;           /* haTransferBatchSize: 262144 */
  uint64_t ha_fallbehind_max;        /* haSlaveFallbehindMax: 268435456 */
  int ha_ack_on;                     /* haSyncAckOn: received */
  uint32_t metadata_sync_ms;         /* slaveSyncMetadataInterval: 3000 */
  char delay_levels[512];            /* messageDelayLevel: "1s 5s 10s 30s 1m ... 2h" */
};

#define FY_DELAY_LEVELS_MAX 64

/* Parses messageDelayLevel ("1s 5s 1m 2h ...": numbers with s, m, h or d,
 * separated by spaces) into out_ms[0..]. Returns the number of levels
 * (1..max), or -1 when a level is malformed, zero, or there are none or
 * more than max. */
int fy_delay_levels_parse(const char *spec, uint64_t *out_ms, size_t max);

extern const struct fy_config_key fy_broker_config_keys[];

/* All sections a broker reads: the broker's and the store's keys. */
struct fy_broker_settings {
  struct fy_broker_config broker;
  struct fy_store_config store;
};

/* Defaults for both sections. */
void fy_broker_settings_defaults(struct fy_broker_settings *s);
/* The two config sections, for fy_config_load/set/dump. */
void fy_broker_settings_sections(struct fy_broker_settings *s, struct fy_config_section out[2]);
/* Cross-key checks after loading (e.g. a slave needs brokerId > 0). Writes a
 * message naming the keys to err. */
int fy_broker_settings_check(const struct fy_broker_settings *s, char *err, size_t errlen);

#endif
