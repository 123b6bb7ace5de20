/*
 * The name server process: the route table (routes.h) served over Ferry's
 * protocol. Brokers register every 30 s; a broker's connection closing drops
 * it at once; a timer drops brokers silent for brokerChannelExpiredTime.
 */
#ifndef FY_NAMESRV_NAMESRV_H
#define FY_NAMESRV_NAMESRV_H

#include <stdint.h>
#include <uv.h>

#include "common/config.h"

struct fy_namesrv_config {
  char listen_address[64];     /* listenAddress: 0.0.0.0 */
  uint32_t listen_port;        /* listenPort: 9876 */
  uint32_t expiry_ms;          /* brokerChannelExpiredTime: 120000 */
  uint32_t scan_interval_ms;   /* scanNotActiveBrokerInterval: 5000 */
  uint32_t max_brokers;        /* maxBrokers: 4096 */
  uint32_t max_topics;         /* maxTopics: 100000 */
  uint32_t max_frame_bytes;    /* maxFrameSize: 16777216 */
};

extern const struct fy_config_key fy_namesrv_config_keys[];

typedef struct fy_namesrv fy_namesrv;

/* Starts serving on loop. Returns 0 or a negative error (e.g. port in use). */
int fy_namesrv_start(uv_loop_t *loop, const struct fy_namesrv_config *cfg, fy_namesrv **out);
/* The port bound (useful with listenPort=0 in tests). */
int fy_namesrv_port(const fy_namesrv *ns);
/* Stops listening, closes connections and timers; memory is freed once the
 * loop has run the closes. */
void fy_namesrv_stop(fy_namesrv *ns);

#endif
