/*
 * Socket plumbing for the peer clients (see peer_sock.h): one connect, one
 * bounded output buffer, no event library, so the clients' own cost stays
 * small and comparable.
 */
#include "bench/peers/peer_sock.h"

#include "bench/peers/peer_run.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int ps_connect(const char *host, int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
    return -EINVAL;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

int ps_append(struct ps_buf *b, const void *p, size_t n) {
  if (b->len + n > PS_OUT_MAX)
    return -ENOBUFS;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + n)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
      return -ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int ps_flush(int fd, struct ps_buf *b) {
  size_t off = 0;
  while (off < b->len) {
    ssize_t w = write(fd, b->data + off, b->len - off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      return -errno;
    }
    off += (size_t)w;
  }
  memmove(b->data, b->data + off, b->len - off);
  b->len -= off;
  return 0;
}

void ps_free(struct ps_buf *b) {
  free(b->data);
  *b = (struct ps_buf){0};
}

int ps_run(struct pr_run *run, int fd, struct ps_buf *out, int (*fill)(void *arg),
           int (*on_input)(void *arg), void *arg) {
  int rc = 0;
  uint64_t tick_ns = (uint64_t)run->o.tick_us * 1000u, next_fill = 0;
  for (uint64_t now = pr_now_ns(); !pr_finished(run, now); now = pr_now_ns()) {
    if (now >= next_fill) {
      if ((rc = fill(arg)))
        break;
      next_fill = now + tick_ns;
    }
    if ((rc = ps_flush(fd, out)))
      break;
    struct pollfd p = {.fd = fd, .events = POLLIN | (out->len ? POLLOUT : 0)};
    int r;
    if (tick_ns) {
      /* Sleep to the next tick (or an acknowledgement), to the nanosecond,
       * as ferry-bench's sender does: a client that spins keeps its CPU from
       * ever halting, and on a virtual machine that costs the other CPU too
       * (bench/e2e_notes.md, seventh and thirteenth sessions). */
      uint64_t t = pr_now_ns(), wait = next_fill > t ? next_fill - t : 0;
      if (wait > 100000000u)
        wait = 100000000u;
      struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000u),
                            .tv_nsec = (long)(wait % 1000000000u)};
      r = ppoll(&p, 1, &ts, NULL);
    } else {
      r = poll(&p, 1, out->len ? 100 : pr_poll_ms(run, pr_now_ns()));
    }
    if (r < 0 && errno != EINTR) {
      rc = -errno;
      break;
    }
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && (rc = on_input(arg)))
      break;
  }
  return rc;
}
