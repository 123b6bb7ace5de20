/*
 * A non-blocking loopback TCP connection with a bounded output buffer, for
 * the peer clients that speak their protocol themselves (redis_bench parses
 * with hiredis's reader, nats_bench by hand). Nothing here blocks except
 * ps_connect.
 */
#ifndef FY_BENCH_PEER_SOCK_H
#define FY_BENCH_PEER_SOCK_H

#include <stddef.h>

#define PS_OUT_MAX (8u * 1024 * 1024) /* bytes queued for the socket, at most */

struct ps_buf {
  char *data;
  size_t len, cap;
};

/* Connects (blocking, TCP_NODELAY) and then makes the socket non-blocking.
 * Returns the fd or a negative errno. */
int ps_connect(const char *host, int port);
/* Appends n bytes; -ENOBUFS if that would exceed PS_OUT_MAX. */
int ps_append(struct ps_buf *b, const void *p, size_t n);
/* Writes as much of b as the socket takes; 0 or a negative errno. */
int ps_flush(int fd, struct ps_buf *b);
void ps_free(struct ps_buf *b);

struct pr_run;
/*
 * Drives one run over fd until pr_finished: fill(arg) queues whatever may
 * be sent now into out, out is written as far as the socket takes it, then
 * poll waits for input (or for the next send time) and on_input(arg) reads
 * and handles the replies. Returns 0, or the first negative errno of a
 * callback or the socket.
 */
int ps_run(struct pr_run *run, int fd, struct ps_buf *out, int (*fill)(void *arg),
           int (*on_input)(void *arg), void *arg);

#endif
