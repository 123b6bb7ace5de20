/*
 * floor_server: the least a broker can do to acknowledge a send, as a
 * yardstick for Ferry's latency on the machine it runs on (bench/floor.sh;
 * docs/BENCHMARKS.md, "The machine's floor").
 *
 * It reads Ferry's native frames on one connection at a time and answers
 * each request with an empty OK response (the request's id and op). It does
 * nothing else a broker does: no decoding, no consume queues, no index, no
 * name server. With --disk (the default) it stores the way Ferry's commit
 * log does under ASYNC_FLUSH: frames are copied into a buffer, written to a
 * file by one io_uring buffered write at a time, written back ahead every
 * --writeback-kb (sync_file_range) and fdatasynced every --flush-ms, all
 * through the same ring; a request is answered once the write holding it
 * has completed. The file is --file-mb of zeros written at start (already
 * allocated, the cheapest case for the file system) and is rewritten from
 * its start when full. With --no-disk a request is answered when it is read.
 * --work-ns N spins N ns per request, to see what a busier server's CPU
 * share alone does to its latency on this machine.
 *
 * Single-threaded, one epoll loop; every buffer is bounded, and a full one
 * stops reading until it drains. A second connection while one is open is
 * closed at once. Prints "listening on port N" when ready (--port 0 picks a
 * free port).
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/frame.h"

#define IN_MAX (4u << 20)      /* bytes read and not yet taken, at most */
#define LOG_BUF (4u << 20)     /* each of the two write buffers */
#define OUT_MAX (1u << 20)     /* response bytes not yet written to the socket */
#define OWED_MAX (1u << 20)    /* requests read and not yet answered */
#define FRAME_MAX (IN_MAX - FY_FRAME_HEADER_LEN)

enum { UD_WRITE = 1, UD_WRITEBACK, UD_FLUSH };

struct owed {
  uint64_t request_id;
  uint16_t op;
};

static struct {
  bool disk;
  uint64_t file_bytes, writeback_bytes;
  uint32_t flush_ms;
  int port;
  uint32_t work_ns;
  const char *path;
} opt = {.disk = true, .file_bytes = 256ull << 20, .writeback_bytes = 256u << 10,
         .flush_ms = 500, .port = 0, .path = NULL};

static struct io_uring ring;
static int file_fd = -1, conn_fd = -1, ep = -1;
static uint8_t *in, *out;
static size_t in_len, out_len;
static struct owed *owed;
static size_t owed_head, owed_len, owed_writable; /* the first owed_writable may be answered */

/* Two buffers: frames go into bufs[cur] while the other one is being written. */
static uint8_t *bufs[2];
static size_t buf_len[2], buf_reqs[2];
static int cur;
static bool write_inflight, writeback_inflight, flush_inflight;
static uint64_t file_off, written_back;
static uint64_t next_flush_ns;
static uint64_t stats_writes, stats_flushes, stats_requests;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err) {
  fprintf(stderr, "floor_server: %s: %s\n", what, strerror(err));
  exit(1);
}

static struct io_uring_sqe *sqe_get(void) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (!sqe)
    die("io_uring", EBUSY); /* at most three requests are ever in flight */
  return sqe;
}

static void submit(void) {
  int r = io_uring_submit(&ring);
  if (r < 0)
    die("io_uring_submit", -r);
}

static void start_write(void) {
  if (write_inflight || buf_len[cur] == 0)
    return;
  int b = cur;
  cur ^= 1;
  if (file_off + buf_len[b] > opt.file_bytes)
    file_off = written_back = 0; /* wrap: rewrite the file from its start */
  struct io_uring_sqe *sqe = sqe_get();
  io_uring_prep_write(sqe, file_fd, bufs[b], (unsigned)buf_len[b], file_off);
  io_uring_sqe_set_data64(sqe, UD_WRITE);
  file_off += buf_len[b];
  write_inflight = true;
  submit();
}

static void start_background(uint64_t now) {
  if (!writeback_inflight && opt.writeback_bytes && file_off >= written_back + opt.writeback_bytes) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_sync_file_range(sqe, file_fd, (unsigned)(file_off - written_back), written_back,
                                  SYNC_FILE_RANGE_WRITE);
    io_uring_sqe_set_data64(sqe, UD_WRITEBACK);
    written_back = file_off;
    writeback_inflight = true;
    submit();
  }
  if (!flush_inflight && opt.flush_ms && now >= next_flush_ns) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_fsync(sqe, file_fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, UD_FLUSH);
    next_flush_ns = now + (uint64_t)opt.flush_ms * 1000000u;
    flush_inflight = true;
    submit();
  }
}

static void reap(void) {
  struct io_uring_cqe *cqe;
  while (io_uring_peek_cqe(&ring, &cqe) == 0) {
    uint64_t what = io_uring_cqe_get_data64(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    if (res < 0)
      die(what == UD_WRITE ? "write" : what == UD_FLUSH ? "fdatasync" : "sync_file_range", -res);
    if (what == UD_WRITEBACK) {
      writeback_inflight = false;
    } else if (what == UD_FLUSH) {
      flush_inflight = false;
      stats_flushes++;
    } else {
      int b = cur ^ 1; /* the buffer that was being written */
      if ((size_t)res != buf_len[b])
        die("write", EIO); /* a short buffered write: the disk is full */
      owed_writable += buf_reqs[b];
      buf_len[b] = buf_reqs[b] = 0;
      write_inflight = false;
      stats_writes++;
    }
  }
}

/* Forgets the connection and all it left: unread input, unsent and owed
 * answers (its bytes already buffered are still written). The next
 * connection starts clean. */
static void conn_drop(void) {
  close(conn_fd);
  conn_fd = -1;
  in_len = out_len = 0;
  owed_head = owed_len = owed_writable = 0;
  buf_reqs[0] = buf_reqs[1] = 0;
}

/* Busy for ns nanoseconds: the work a broker does per request, simulated. */
static void spin_ns(uint32_t ns) {
  uint64_t end = now_ns() + ns;
  while (now_ns() < end) {
  }
}

/* Takes whole frames from the input while the buffers have room. */
static void take_frames(void) {
  size_t pos = 0;
  while (in_len - pos >= FY_FRAME_HEADER_LEN && owed_len < OWED_MAX) {
    fy_frame f;
    ssize_t n = fy_frame_parse(in + pos, in_len - pos, FRAME_MAX, &f, NULL);
    if (n < 0) {
      fprintf(stderr, "floor_server: bad frame (%zd); closing the connection\n", n);
      conn_drop();
      return;
    }
    if (n == 0)
      break;
    bool answered = f.kind != FY_FRAME_ONEWAY;
    if (opt.disk) {
      if (buf_len[cur] + (size_t)n > LOG_BUF)
        break; /* wait for the write in flight */
      memcpy(bufs[cur] + buf_len[cur], in + pos, (size_t)n);
      buf_len[cur] += (size_t)n;
      buf_reqs[cur] += answered;
    } else {
      owed_writable += answered;
    }
    if (answered) {
      owed[(owed_head + owed_len) % OWED_MAX] = (struct owed){f.request_id, f.op};
      owed_len++;
    }
    stats_requests++;
    if (opt.work_ns)
      spin_ns(opt.work_ns);
    pos += (size_t)n;
  }
  memmove(in, in + pos, in_len - pos);
  in_len -= pos;
}

static void answer(void) {
  while (owed_writable > 0 && owed_len > 0 && out_len + FY_FRAME_HEADER_LEN <= OUT_MAX) {
    struct owed o = owed[owed_head];
    owed_head = (owed_head + 1) % OWED_MAX;
    owed_len--;
    owed_writable--;
    fy_frame_encode_header(out + out_len, FY_FRAME_RESPONSE, 0, o.request_id, o.op, 0, 0);
    out_len += FY_FRAME_HEADER_LEN;
  }
}

static void flush_out(void) {
  size_t done = 0;
  while (done < out_len) {
    ssize_t n = write(conn_fd, out + done, out_len - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        done = out_len; /* the peer is gone; the read side notices */
      break;
    }
    done += (size_t)n;
  }
  memmove(out, out + done, out_len - done);
  out_len -= done;
}

static void read_conn(void) {
  for (int turns = 0; turns < 4 && in_len < IN_MAX; turns++) {
    ssize_t n = read(conn_fd, in + in_len, IN_MAX - in_len);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      fprintf(stderr, "floor_server: connection closed after %llu requests\n",
              (unsigned long long)stats_requests);
      conn_drop();
      return;
    }
    if (n < 0)
      return;
    in_len += (size_t)n;
  }
}

static void watch_conn(void) {
  if (conn_fd < 0)
    return;
  bool stalled = in_len == IN_MAX || owed_len == OWED_MAX;
  struct epoll_event ev = {.events = (stalled ? 0u : EPOLLIN) | (out_len ? EPOLLOUT : 0u),
                           .data.fd = conn_fd};
  epoll_ctl(ep, EPOLL_CTL_MOD, conn_fd, &ev);
}

static int prepare_file(void) {
  file_fd = open(opt.path, O_RDWR | O_CREAT, 0644);
  if (file_fd < 0)
    return -errno;
  uint8_t *zeros = calloc(1, 1u << 20);
  if (!zeros)
    return -ENOMEM;
  for (uint64_t off = 0; off < opt.file_bytes; off += 1u << 20) {
    if (pwrite(file_fd, zeros, 1u << 20, (off_t)off) != 1 << 20) {
      free(zeros);
      return errno ? -errno : -EIO;
    }
  }
  free(zeros);
  return fdatasync(file_fd) == 0 ? 0 : -errno;
}

static int num_arg(const char *s, uint64_t lo, uint64_t hi, uint64_t *v) {
  char *end;
  errno = 0;
  unsigned long long n = strtoull(s, &end, 10);
  if (errno || end == s || *end || n < lo || n > hi)
    return -1;
  *v = n;
  return 0;
}

static const char usage[] =
    "usage: floor_server --file PATH [--port P=0] [--file-mb MB=256] [--writeback-kb KB=256]\n"
    "                    [--flush-ms MS=500] [--work-ns NS=0]\n"
    "       floor_server --no-disk [--port P=0]\n"
    "  --writeback-kb 0 / --flush-ms 0: no writeback ahead / no fdatasync\n";

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    uint64_t v = 0;
    if (strcmp(a, "--no-disk") == 0) {
      opt.disk = false;
      continue;
    }
    if (i + 1 >= argc)
      goto bad;
    const char *val = argv[++i];
    if (strcmp(a, "--file") == 0)
      opt.path = val;
    else if (strcmp(a, "--port") == 0 && num_arg(val, 0, 65535, &v) == 0)
      opt.port = (int)v;
    else if (strcmp(a, "--file-mb") == 0 && num_arg(val, 8, 1u << 20, &v) == 0)
      opt.file_bytes = v << 20;
    else if (strcmp(a, "--writeback-kb") == 0 && num_arg(val, 0, 1u << 20, &v) == 0)
      opt.writeback_bytes = v << 10;
    else if (strcmp(a, "--work-ns") == 0 && num_arg(val, 0, 1000000, &v) == 0)
      opt.work_ns = (uint32_t)v;
    else if (strcmp(a, "--flush-ms") == 0 && num_arg(val, 0, 3600000, &v) == 0)
      opt.flush_ms = (uint32_t)v;
    else
      goto bad;
  }
  if (opt.disk && !opt.path)
    goto bad;
  signal(SIGPIPE, SIG_IGN);

  in = malloc(IN_MAX);
  out = malloc(OUT_MAX);
  owed = malloc(sizeof *owed * OWED_MAX);
  bufs[0] = malloc(LOG_BUF);
  bufs[1] = malloc(LOG_BUF);
  if (!in || !out || !owed || !bufs[0] || !bufs[1])
    die("malloc", ENOMEM);
  int r;
  if (opt.disk && (r = prepare_file()) < 0)
    die(opt.path, -r);
  if ((r = io_uring_queue_init(8, &ring, 0)) < 0)
    die("io_uring_queue_init", -r);
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0 || io_uring_register_eventfd(&ring, efd) < 0)
    die("eventfd", errno);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 16) ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl))
    die("listen", errno);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.fd = efd;
  epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
  printf("listening on port %d (%s)\n", ntohs(sa.sin_port), opt.disk ? "disk" : "no disk");
  fflush(stdout);

  next_flush_ns = now_ns() + (uint64_t)opt.flush_ms * 1000000u;
  for (;;) {
    int timeout = -1;
    if (opt.disk && opt.flush_ms && !flush_inflight) {
      uint64_t now = now_ns();
      timeout = next_flush_ns > now ? (int)((next_flush_ns - now) / 1000000u) + 1 : 0;
    }
    struct epoll_event evs[4];
    int n = epoll_wait(ep, evs, 4, timeout);
    if (n < 0 && errno != EINTR)
      die("epoll_wait", errno);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
          continue;
        if (conn_fd >= 0) {
          close(c); /* one connection at a time */
          continue;
        }
        conn_fd = c;
        setsockopt(conn_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event cev = {.events = EPOLLIN, .data.fd = conn_fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, conn_fd, &cev);
      } else if (fd == efd) {
        uint64_t count;
        if (read(efd, &count, sizeof count) < 0 && errno != EAGAIN)
          die("eventfd read", errno);
        reap();
      } else if (fd == conn_fd) {
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
          read_conn();
      }
    }
    if (conn_fd >= 0)
      take_frames();
    if (opt.disk) {
      start_write();
      start_background(now_ns());
    }
    if (conn_fd >= 0) {
      answer();
      flush_out();
      watch_conn();
    }
  }
bad:
  fputs(usage, stderr);
  return 2;
}
