/*
 * RocketMQ 4.x remoting on the name server's port: route lookups, cluster
 * info, topic lists and topic deletion for unchanged RocketMQ clients and
 * tools, on the same route table as the native protocol.
 */
#ifndef FY_NAMESRV_NS_RMQ_H
#define FY_NAMESRV_NS_RMQ_H

#include <stddef.h>
#include <stdint.h>

#include "namesrv/routes.h"
#include "net/conn.h"

/* The on_foreign handler's body: parses and answers up to a bounded number
 * of remoting requests from bytes; returns the bytes consumed. A frame that
 * does not parse closes the connection. */
size_t fy__ns_rmq_on_bytes(fy_conn *conn, fy_routes *routes, uint32_t frame_max,
                           const uint8_t *bytes, size_t len);

#endif
