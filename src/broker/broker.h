/*
 * The broker process: the store served over Ferry's protocol, with topics,
 * consumer groups and offsets, long polling, and registration with the name
 * servers. broker.c wires it together; send.c, pull.c and admin.c hold the
 * request handlers.
 */
#ifndef FY_BROKER_BROKER_H
#define FY_BROKER_BROKER_H

#include <uv.h>

#include "broker/broker_config.h"

typedef struct fy_broker fy_broker;

/* Opens the store (recovering it) and the metadata, starts listening and
 * registering. Returns 0 or a negative error, logged with its cause. A
 * failure after the store opened closes what had started (the store
 * cleanly, as fy_broker_stop does) in the background: run loop until it has
 * nothing left to do, and the broker is freed, its cause logged last. */
int fy_broker_start(uv_loop_t *loop, const struct fy_broker_settings *cfg, fy_broker **out);

/* The client port bound (listenPort=0 picks one). */
int fy_broker_port(const fy_broker *b);
/* The HA port bound by a master (0 for a slave). */
int fy_broker_ha_port(const fy_broker *b);

/*
 * Graceful stop: unregisters from the name servers, answers new requests
 * with SERVICE_NOT_AVAILABLE, lets pending sends complete, closes the store
 * (flush, checkpoint, abort marker removed), persists offsets, topics and
 * groups, closes every connection, then calls done(arg). The broker is
 * freed after done returns.
 */
void fy_broker_stop(fy_broker *b, void (*done)(void *arg, int status), void *arg);

#endif
