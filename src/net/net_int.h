/*
 * Internals shared by conn.c and rpc.c; not for use outside src/net.
 *
 * The rpc state of a connection is created by rpc.c on the first call and
 * hangs off the connection; conn.c hands it every response frame and, once
 * the connection is fully closed, asks it to fail what is still pending.
 * The rpc deadline timer is a handle of the connection so that conn.c
 * closes it with the others.
 */
#ifndef FY_NET_NET_INT_H
#define FY_NET_NET_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "net/conn.h"

struct fy__rpc;

/* conn.c -> rpc.c */
/* A response frame: true if it matched a pending call (and was handled). */
bool fy__rpc_on_response(fy_conn *conn, const fy_frame *f);
/* The connection's handles are closed: fail every pending call with
 * -FY_ECLOSED and free the rpc state. Runs before on_close. */
void fy__rpc_on_close(fy_conn *conn);

/* rpc.c -> conn.c */
struct fy__rpc **fy__conn_rpc(fy_conn *conn);
uv_timer_t *fy__conn_rpc_timer(fy_conn *conn);
const fy_conn_cfg *fy__conn_cfg(const fy_conn *conn);
/* 0 if frames can be sent now, else -ENOTCONN or -FY_ECLOSED. */
int fy__conn_can_send(const fy_conn *conn);
/* fy_conn_send that also copies the raw buffers into the queued frame (one
 * allocation for the whole frame), so nothing needs releasing: requests,
 * whose callback can run while the write is still queued. */
int fy__conn_send_copy(fy_conn *conn, enum fy_frame_kind kind, uint64_t request_id, uint16_t op,
                       const ProtobufCMessage *msg, const uv_buf_t *raw, unsigned nraw);

#endif
