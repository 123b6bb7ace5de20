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
  for (uint64_t now = pr_now_ns(); !pr_finished(run, now); now = pr_now_ns()) {
    if ((rc = fill(arg)) || (rc = ps_flush(fd, out)))
      break;
    struct pollfd p = {.fd = fd, .events = POLLIN | (out->len ? POLLOUT : 0)};
    int ms = out->len ? 100 : pr_poll_ms(run, pr_now_ns());
    if (poll(&p, 1, ms) < 0 && errno != EINTR) {
      rc = -errno;
      break;
    }
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && (rc = on_input(arg)))
      break;
  }
  return rc;
}
