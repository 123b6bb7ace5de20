/*
 * Request/response over an fy_conn: fy_rpc_call() sends a request under a
 * fresh request id and calls back when the response with that id arrives
 * (responses may come in any order), when the call's timeout passes, or
 * when the connection closes. Plus the server side's replies.
 *
 * Per connection: at most rpc_pending_max calls are pending (fy_conn_cfg);
 * one timer serves all their deadlines (a min-heap), and at most 1024 calls
 * time out per timer tick.
 */
#ifndef FY_NET_RPC_H
#define FY_NET_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"
#include "net/frame.h"

/*
 * A call finished. err is 0 when the response arrived: resp is the
 * response frame (resp->status is the protocol Status; unpack
 * resp->header with fy_frame_unpack(), or read an error's text with
 * fy_frame_error_text()). resp and the bytes it points to are valid only
 * until the callback returns. Otherwise resp is NULL and err is
 * -FY_ETIMEOUT (no response in time; a late one is then handed to
 * on_frame, or dropped) or -FY_ECLOSED (the connection closed first).
 * Runs exactly once per successful fy_rpc_call; conn is valid during it.
 */
typedef void (*fy_rpc_cb)(fy_conn *conn, int err, const fy_frame *resp, void *arg);

/*
 * Sends a request: op, msg packed as the header section (NULL: empty), the
 * raw buffers as the raw section. msg and the raw bytes are copied into
 * the outgoing frame, so they may go when this returns. cb runs once, from
 * the loop, after a response, at timeout_ms (> 0) at the latest, or when
 * the connection closes.
 * Returns 0, or (cb will not run) -EINVAL, -ENOTCONN, -FY_ECLOSED,
 * -FY_EBUSY (rpc_pending_max calls pending, or the write queue is full),
 * -FY_EFRAME_TOO_BIG, -ENOMEM.
 */
int fy_rpc_call(fy_conn *conn, uint16_t op, const ProtobufCMessage *msg, const uv_buf_t *raw,
                unsigned nraw, uint32_t timeout_ms, fy_rpc_cb cb, void *arg);

/* Sends a one-way request (no response, request id 0); copies like
 * fy_rpc_call. Returns 0 or the same errors. */
int fy_rpc_oneway(fy_conn *conn, uint16_t op, const ProtobufCMessage *msg, const uv_buf_t *raw,
                  unsigned nraw);

/* Calls pending on conn. */
size_t fy_rpc_pending(const fy_conn *conn);

/* Whether rpc_pending_max calls are pending on conn, so that fy_rpc_call
 * would return -FY_EBUSY; on_rpc_room (fy_conn_cfg) tells when one ends. */
bool fy_rpc_full(const fy_conn *conn);

/* Answers request request_id with a response frame: fy_conn_send() with
 * kind FY_FRAME_RESPONSE, same lifetime rule (raw buffers must remain valid
 * until release_cb is called) and errors. */
int fy_conn_reply(fy_conn *conn, uint64_t request_id, uint16_t op, uint16_t status,
                  const ProtobufCMessage *msg, const uv_buf_t *raw, unsigned nraw,
                  fy_release_cb release_cb, void *release_arg);

/* Answers with status (non-zero) and an ErrorResponse whose message is the
 * printf-formatted text (cut at 511 bytes). Returns like fy_conn_send. */
int fy_conn_reply_error(fy_conn *conn, uint64_t request_id, uint16_t op, uint16_t status,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Copies an error response's ErrorResponse message into buf (size bytes,
 * NUL-terminated, cut to fit). Returns 0 or -FY_EDECODE. */
int fy_frame_error_text(const fy_frame *f, char *buf, size_t size);

#endif
