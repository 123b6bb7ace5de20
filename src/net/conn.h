/*
 * TCP connections carrying Ferry frames, over libuv.
 *
 * One module for both ends: fy_server_listen() accepts connections,
 * fy_conn_connect() opens one. Either way the result is an fy_conn that
 * delivers each received frame to on_frame and sends frames with
 * fy_conn_send(); request/response matching lives in rpc.h on top.
 *
 * Everything runs on the loop thread; no function here may be called from
 * another thread. Callbacks never run inside the call that caused them:
 * they run from the loop (libuv's rule). If a function that takes a
 * callback returns an error, that callback never runs.
 *
 * Lifetime: an fy_conn is valid from the moment the user first sees it
 * (on_accept, or fy_conn_connect's *out) until its on_close callback
 * returns; on_close runs exactly once for every connection the user has
 * seen, after every release callback and every failed rpc callback of that
 * connection has run. After fy_conn_close(), sends fail with -FY_ECLOSED
 * and the pointer stays valid until on_close returns.
 *
 * Bounds, per connection: the read buffer never grows past the largest
 * frame allowed (frame_max_bytes + 24) and shrinks back after a big one; at most frames_per_turn frames are handled per
 * callback (a read, or a turn taken for frames left over), and what is left
 * waits for a later loop turn with reading paused, so a busy peer gets at
 * most twice frames_per_turn frames per loop iteration; the write queue is
 * bounded by write_queue_max_bytes (see fy_conn_send).
 */
#ifndef FY_NET_CONN_H
#define FY_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/frame.h"

typedef struct fy_conn fy_conn;
typedef struct fy_server fy_server;

/* A frame arrived. frame and the bytes it points to (header, raw) live in
 * the connection's read buffer and are valid only until the callback
 * returns: copy what must outlive it. The callback may send, close the
 * connection, or start rpc calls. Responses that match a pending
 * fy_rpc_call go to that call instead (rpc.h). */
typedef void (*fy_frame_cb)(fy_conn *conn, const fy_frame *frame);

/* A server connection whose first byte is not 'F' (RocketMQ remoting,
 * whose frames start with a big-endian length). Called with every byte
 * received and not yet consumed; returns how many it consumed (0..len).
 * Unconsumed bytes stay and are offered again with what follows. If it
 * consumed some and bytes remain, it is called again on a later loop turn
 * (so it can bound its work per call); if it consumed none, it is called
 * again only when more bytes arrive. bytes is valid until it returns. Reply
 * with fy_conn_write(). Unconsumed bytes are bounded by frame_max_bytes + 24:
 * past that the connection closes with -FY_EFRAME_TOO_BIG. */
typedef size_t (*fy_foreign_cb)(fy_conn *conn, const uint8_t *bytes, size_t len);

/* The connection is gone; reason is what fy_conn_close got, or the error
 * that closed it: UV_EOF when the peer closed, a negative errno, -ETIMEDOUT
 * for the idle timeout, -FY_EFRAME_* for a bad frame, -ECANCELED when its
 * server was closed. The last callback for conn; conn is freed after it. */
typedef void (*fy_close_cb)(fy_conn *conn, int reason);

/* fy_conn_connect's result: 0, or a negative libuv/errno error (-ETIMEDOUT
 * after connect_timeout_ms, UV_ECANCELED if closed while connecting). On
 * error the connection is closed right after this returns (on_close
 * follows). */
typedef void (*fy_connect_cb)(fy_conn *conn, int status);

/* A new server connection. Set its data here if needed; it starts reading
 * when this returns. */
typedef void (*fy_accept_cb)(fy_server *server, fy_conn *conn);

/* A call pending on conn (rpc.h) finished after the table had been full:
 * there is room for another fy_rpc_call. Runs on the loop, after the
 * finished call's callback; conn may be closing (fy_rpc_call says so). */
typedef void (*fy_rpc_room_cb)(fy_conn *conn);

/* The buffers given to a send are no longer used: status 0 when written,
 * or a negative error when the write failed or the connection closed
 * first. Runs exactly once per successful send. */
typedef void (*fy_release_cb)(void *arg, int status);

/* Configuration, copied by fy_server_listen / fy_conn_connect. A zeroed
 * struct is valid: every 0 means the default given. */
typedef struct fy_conn_cfg {
  uint32_t frame_max_bytes;        /* payload limit, both directions (max 1 GiB): 16 MiB */
  uint64_t write_queue_max_bytes;  /* soft write-queue limit: 64 MiB */
  uint32_t idle_timeout_ms;        /* close after this long with no bytes in or out: never */
  uint32_t connect_timeout_ms;     /* client connect, including name lookup: 3000 */
  uint32_t frames_per_turn;        /* frames handled per read or turn callback: 64 */
  uint32_t rpc_pending_max;        /* pending fy_rpc_call()s per connection: 4096 */
  uint32_t max_conns;              /* server: open connections; more are refused: 10000 */
  fy_frame_cb on_frame;            /* NULL: requests get UNSUPPORTED_OP, others dropped */
  fy_foreign_cb on_foreign;        /* server: NULL closes non-Ferry connections */
  fy_close_cb on_close;            /* may be NULL */
  fy_rpc_room_cb on_rpc_room;      /* may be NULL */
  void *data;                      /* initial user data of each connection */
} fy_conn_cfg;

/* Largest raw iov count fy_conn_send / fy_conn_write take. */
#define FY_CONN_IOV_MAX 1024

/* ------------------------------------------------------------------ server */

/* Listens on host:port (a numeric IPv4 or IPv6 address; port 0 picks a
 * free port, see fy_server_port). on_accept runs for each connection.
 * Returns 0 and *out, or a negative error (bind failure: UV_EADDRINUSE...). */
int fy_server_listen(uv_loop_t *loop, const char *host, int port, const fy_conn_cfg *cfg,
                     fy_accept_cb on_accept, fy_server **out);

/* The port actually bound. */
int fy_server_port(const fy_server *server);

/* Open connections. */
size_t fy_server_conn_count(const fy_server *server);

void fy_server_set_data(fy_server *server, void *data);
void *fy_server_data(const fy_server *server);

/* Stops listening and closes every connection of the server (reason
 * -ECANCELED). server is invalid when this returns; its memory goes once
 * the loop has run the close. */
void fy_server_close(fy_server *server);

/* ------------------------------------------------------------------ client */

/*
 * Connects to host:port: a numeric address, or a name looked up with
 * getaddrinfo (its first IPv4 address, else its first address). Returns 0 and *out at once; cb(conn, status)
 * runs once the connection is up or has failed. Nothing can be sent before
 * cb reports 0 (sends fail with -ENOTCONN).
 */
int fy_conn_connect(uv_loop_t *loop, const char *host, int port, const fy_conn_cfg *cfg,
                    fy_connect_cb cb, fy_conn **out);

/* ------------------------------------------------------------ connections */

/*
 * Sends one frame: the 24-byte header, msg packed as the header section
 * (NULL: empty), then the raw buffers as the raw section. The header and
 * msg are packed into one small allocated buffer at once, so msg may go
 * when this returns; the raw buffers are NOT copied: they must remain valid
 * until release_cb is called (pull responses point into mapped commit-log
 * segments). release_cb may be NULL when there is nothing to release.
 *
 * Returns 0, or (and release_cb will not run):
 *   -ENOTCONN          still connecting
 *   -FY_ECLOSED        closing or closed
 *   -EINVAL            nraw > FY_CONN_IOV_MAX or bad kind
 *   -FY_EFRAME_TOO_BIG payload over frame_max_bytes
 *   -FY_EBUSY          the write queue is over twice write_queue_max_bytes
 *   -ENOMEM
 * Sends are written in order; those made during one loop turn go to the
 * socket together at the end of the turn (one writev), or earlier once
 * many are queued, and always before a close.
 * Backpressure: once the write queue is over write_queue_max_bytes, the
 * connection stops reading (and handling already buffered frames) until the
 * queue drains below half of it. A peer that sends requests but does not
 * read responses thus stalls itself, not the server.
 */
int fy_conn_send(fy_conn *conn, enum fy_frame_kind kind, uint64_t request_id, uint16_t op,
                 uint16_t status, const ProtobufCMessage *msg, const uv_buf_t *raw,
                 unsigned nraw, fy_release_cb release_cb, void *release_arg);

/* Sends bytes as they are, without framing: for an on_foreign protocol, or
 * an already encoded frame. Same lifetime rule and errors as fy_conn_send
 * (no frame size check): bufs' bytes must remain valid until release_cb is
 * called; the bufs array itself may go when this returns. */
int fy_conn_write(fy_conn *conn, const uv_buf_t *bufs, unsigned nbufs, fy_release_cb release_cb,
                  void *release_arg);

/* fy_conn_write for two malloc'd buffers (body may be NULL) that the
 * connection owns from the call on: both are freed once written, or at once
 * when the write cannot be queued. Returns 0 or fy_conn_write's errors (or
 * -ENOMEM); the buffers are freed either way. */
int fy_conn_write_owned(fy_conn *conn, void *hdr, size_t hdr_len, void *body, size_t body_len);

/* Closes the connection: stops reading, cancels queued writes (their
 * release callbacks get UV_ECANCELED), fails pending rpc calls
 * (-FY_ECLOSED), then runs on_close(conn, reason), all from the loop.
 * reason: 0 or a negative error, for logs and on_close. Idempotent: only
 * the first call's reason counts. */
void fy_conn_close(fy_conn *conn, int reason);

/* Bytes of sends not yet written to the socket, counting each queued send's
 * bookkeeping (about 100 bytes) too. */
size_t fy_conn_write_queue_bytes(const fy_conn *conn);

/* Holds the connection's input (hold true) until released (false): no
 * further frame is delivered, not even one already read, and nothing is
 * read, so TCP pushes back on the peer. For an owner that cannot take
 * more for a while (e.g. its writes are full); sends go on meanwhile, and
 * so does the idle timeout (idle_timeout_ms). Callable from on_frame. */
void fy_conn_hold(fy_conn *conn, bool hold);

/* Whether the connection is reading from its socket now (false while
 * paused by backpressure, closing, or with frames waiting for a turn). */
bool fy_conn_reading(const fy_conn *conn);

/* Open for sends: connected and not closing. */
bool fy_conn_is_open(const fy_conn *conn);

void *fy_conn_data(const fy_conn *conn);
void fy_conn_set_data(fy_conn *conn, void *data);
uv_loop_t *fy_conn_loop(const fy_conn *conn);

/* The server the connection was accepted by (NULL for clients and after
 * fy_server_close). */
fy_server *fy_conn_server(const fy_conn *conn);

/* "1.2.3.4:5678" or "[::1]:5678" (for clients, host:port as given until
 * connected), for logs. Valid as long as conn. */
const char *fy_conn_peer(const fy_conn *conn);

/* Text for any error this module returns or reports: libuv codes (UV_EOF),
 * negative errnos and -FY_E* codes. */
const char *fy_net_strerror(int err);

#endif
