/* A fake broker for the client tests: speaks enough of Ferry's protocol
 * (register, send, pull with long polling, heartbeats, consumer lists,
 * offsets) to drive the client library, and misbehaves on demand (busy,
 * closing the connection, never answering). Runs with real name servers
 * (src/namesrv, in-process) on a server thread of its own. */
#ifndef FY_TESTS_FAKEBROKER_H
#define FY_TESTS_FAKEBROKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "namesrv/namesrv.h"
#include "net/conn.h"

#define FB_MAXQ 16
#define FB_MAXMSG 8192
#define FB_MAXCIDS 16
#define FB_MAXHELD 256

/* FB_SEND_HOLD keeps each send unanswered until fb_release_sends. */
enum fb_send_mode { FB_SEND_OK, FB_SEND_BUSY, FB_SEND_CLOSE, FB_SEND_SILENT, FB_SEND_HOLD };

struct fb_held_send {
  fy_conn *conn;
  uint8_t *frame; /* a copy of the request frame */
  size_t len;
};

struct fb_queue {
  uint8_t *rec[FB_MAXMSG];
  uint32_t len[FB_MAXMSG];
  int64_t hash[FB_MAXMSG];
  uint32_t n;   /* messages at offsets [0, n) */
  uint64_t min; /* offsets below are gone */
};

struct fb_held {
  bool used;
  fy_conn *conn;
  uint64_t id;
  uint32_t qid;
  uint64_t offset;
  uint32_t max;
  uint64_t deadline_ms;
  int64_t hashes[16];
  size_t nhashes;
};

struct fb {
  struct senv *env;
  char name[32];
  char cluster[32];
  uint64_t id;
  char topic[64];
  uint32_t nqueues;
  fy_server *server;
  int port;
  char addr[40];
  fy_conn *nsc[2];
  atomic_int registered;
  /* behaviour, set from the test thread */
  atomic_int send_mode;
  atomic_int send_status;   /* OK or a stored status for FB_SEND_OK */
  atomic_ullong suggest;    /* suggest_broker_id in pull answers */
  atomic_int pull_silent;
  atomic_int filter;        /* filter pulls by tag hash (default on) */
  /* counters */
  atomic_int sends, stored, pulls, heartbeats, unregisters, cid_queries, commits;
  atomic_int conns;
  /* state (server thread) */
  struct fb_queue q[FB_MAXQ];
  uint64_t phys;
  bool has_off[FB_MAXQ];
  uint64_t off[FB_MAXQ];
  char cids[FB_MAXCIDS][96];
  int ncids;
  struct fb_held held[FB_MAXHELD];
  uv_timer_t hold_timer;
  int64_t last_hashes[16];
  size_t nlast;
  uint64_t last_commit_in_pull; /* piggy-backed commit offset, +1 */
  struct fb_held_send *held_sends; /* FB_SEND_HOLD */
  size_t nheld_sends, cap_held_sends;
};

struct senv {
  uv_loop_t loop;
  pthread_t thread;
  uv_async_t async;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  void (*fn)(struct senv *, void *);
  void *arg;
  bool done;
  bool stop;
  fy_namesrv *ns[2];
  int ns_port[2];
  struct fb *fb[8];
  int nfb;
};

/* Starts the server thread with nns name servers (1 or 2). */
struct senv *senv_start(int nns);
void senv_stop(struct senv *e);
/* Runs fn(e, arg) on the server thread and waits. */
void senv_run(struct senv *e, void (*fn)(struct senv *, void *), void *arg);

/* Answers every send held by FB_SEND_HOLD, in arrival order, and goes
 * back to FB_SEND_OK. */
void fb_release_sends(struct fb *b);

/* Adds a broker serving topic with nqueues queues, registered with every
 * name server. */
struct fb *fb_add(struct senv *e, const char *cluster, const char *name, uint64_t id,
                  const char *topic, uint32_t nqueues);
/* Drops it from the name servers (closes its registration connections). */
void fb_unregister(struct fb *b);
/* Re-registers with a new queue count. */
void fb_register(struct fb *b, uint32_t nqueues);
/* Stores count messages in queue qid (tags alternate TagA/TagB when
 * mixed_tags, else all TagA). */
void fb_preload(struct fb *b, uint32_t qid, uint32_t count, bool mixed_tags);
/* Closes the broker's listening server and connections, unregistered. */
void fb_kill(struct fb *b);
/* The same without unregistering: the name servers still route to it. */
void fb_crash(struct fb *b);
/* Committed offset of queue qid: true if any. */
bool fb_offset(struct fb *b, uint32_t qid, uint64_t *out);
int fb_ncids(struct fb *b);

#endif
