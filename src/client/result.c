/*
 * What the client hands back and what it decodes: results live in arenas
 * so every result is freed by one call (fy_result_free) however many
 * strings and messages hang off it; received records are checked with the
 * store's own validity rule (magic, lengths, CRC32C, phys_offset) before
 * anything is taken from them, so a corrupted pull response is refused,
 * not consumed. Also the small codecs: tag expressions, message ids.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

/* ------------------------------------------------------------------ arenas */

struct fy__chunk {
  struct fy__chunk *next;
  size_t cap;
};
_Static_assert(sizeof(struct fy__chunk) % 16 == 0, "chunk header keeps data 16-aligned");

#define CHUNK_MIN (16u << 10)
#define BIG_ALLOC (4u << 10) /* bigger allocations get a chunk of their own */
#define RESULT_MAGIC 0x46595253u

struct rhdr {
  struct fy__arena arena;
  uint32_t magic;
};
#define RHDR_SIZE ((sizeof(struct rhdr) + 15) & ~(size_t)15)

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static struct fy__chunk *chunk_new(size_t cap) {
  struct fy__chunk *c = malloc(sizeof *c + cap);
  if (!c)
    return NULL;
  c->next = NULL;
  c->cap = cap;
  return c;
}

void *fy__cl_arena_alloc(struct fy__arena *a, size_t n) {
  n = round16(n ? n : 1);
  if (n <= a->left) {
    void *p = a->cur;
    a->cur += n;
    a->left -= n;
    return p;
  }
  if (n > BIG_ALLOC) {
    /* Its own chunk, behind the current one, which keeps its free space. */
    struct fy__chunk *c = chunk_new(n);
    if (!c)
      return NULL;
    if (a->chunks) {
      c->next = a->chunks->next;
      a->chunks->next = c;
    } else {
      a->chunks = c;
    }
    return c + 1;
  }
  struct fy__chunk *c = chunk_new(CHUNK_MIN);
  if (!c)
    return NULL;
  c->next = a->chunks;
  a->chunks = c;
  a->cur = (char *)(c + 1) + n;
  a->left = CHUNK_MIN - n;
  return c + 1;
}

char *fy__cl_arena_strndup(struct fy__arena *a, const char *s, size_t n) {
  char *p = fy__cl_arena_alloc(a, n + 1);
  if (!p)
    return NULL;
  if (n)
    memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *fy__cl_arena_strdup(struct fy__arena *a, const char *s) {
  return fy__cl_arena_strndup(a, s ? s : "", s ? strlen(s) : 0);
}

void *fy__result_new(size_t size, size_t extra, struct fy__arena **arena) {
  size_t head = RHDR_SIZE + round16(size ? size : 1);
  size_t cap = head + round16(extra);
  struct fy__chunk *c = chunk_new(cap);
  if (!c)
    return NULL;
  struct rhdr *h = (struct rhdr *)(c + 1);
  h->arena.chunks = c;
  h->arena.cur = (char *)h + head;
  h->arena.left = cap - head;
  h->magic = RESULT_MAGIC;
  void *res = (char *)h + RHDR_SIZE;
  memset(res, 0, head - RHDR_SIZE);
  *arena = &h->arena;
  return res;
}

void fy_result_free(void *result) {
  if (!result)
    return;
  struct rhdr *h = (struct rhdr *)((char *)result - RHDR_SIZE);
  fy_assert(h->magic == RESULT_MAGIC);
  h->magic = 0;
  /* The chunk holding h is the last of the list: nothing reads h after it. */
  struct fy__chunk *c = h->arena.chunks;
  while (c) {
    struct fy__chunk *next = c->next;
    free(c);
    c = next;
  }
}

/* ---------------------------------------------------------------- messages */

static void format_host(const struct fy_host *h, char *out, size_t size) {
  char ip[INET6_ADDRSTRLEN];
  if (h->v6) {
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    memcpy(&a.sin6_addr, h->ip, 16);
    uv_ip6_name(&a, ip, sizeof ip);
    snprintf(out, size, "[%s]:%u", ip, h->port);
  } else {
    snprintf(out, size, "%u.%u.%u.%u:%u", h->ip[0], h->ip[1], h->ip[2], h->ip[3], h->port);
  }
}

static const char HEX[] = "0123456789ABCDEF";

static void hex_put(char *out, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = HEX[b[i] >> 4];
    out[2 * i + 1] = HEX[b[i] & 15];
  }
}

void fy__offset_msgid(const struct fy_host *store, uint64_t phys, char *out, size_t size) {
  uint8_t b[28];
  size_t n = store->v6 ? 16 : 4;
  memcpy(b, store->ip, n);
  b[n] = (uint8_t)(store->port >> 24);
  b[n + 1] = (uint8_t)(store->port >> 16);
  b[n + 2] = (uint8_t)(store->port >> 8);
  b[n + 3] = (uint8_t)store->port;
  for (int i = 0; i < 8; i++)
    b[n + 4 + i] = (uint8_t)(phys >> (56 - 8 * i));
  size_t len = n + 12;
  if (size < 2 * len + 1) {
    if (size)
      out[0] = '\0';
    return;
  }
  hex_put(out, b, len);
  out[2 * len] = '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int fy__offset_msgid_decode(const char *id, char *addr, size_t addr_size, uint64_t *phys) {
  size_t len = id ? strlen(id) : 0;
  if (len != 32 && len != 56)
    return -EINVAL;
  uint8_t b[28];
  for (size_t i = 0; i < len / 2; i++) {
    int hi = hexval(id[2 * i]), lo = hexval(id[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -EINVAL;
    b[i] = (uint8_t)(hi << 4 | lo);
  }
  struct fy_host h;
  memset(&h, 0, sizeof h);
  h.v6 = len == 56;
  size_t n = h.v6 ? 16 : 4;
  memcpy(h.ip, b, n);
  h.port = (uint32_t)b[n] << 24 | (uint32_t)b[n + 1] << 16 | (uint32_t)b[n + 2] << 8 | b[n + 3];
  uint64_t off = 0;
  for (int i = 0; i < 8; i++)
    off = off << 8 | b[n + 4 + i];
  if (h.port == 0 || h.port > 65535)
    return -EINVAL;
  format_host(&h, addr, addr_size);
  *phys = off;
  return 0;
}

int fy__msg_view_build(const struct fy_msg *m, const char *broker_name, uint64_t broker_id,
                       struct fy__arena *a, fy_message_view *v) {
  memset(v, 0, sizeof *v);
  v->topic = fy__cl_arena_strndup(a, m->topic, m->topic_len);
  v->broker_name = fy__cl_arena_strdup(a, broker_name);
  v->broker_id = broker_id;
  v->queue_id = m->queue_id;
  v->queue_offset = m->queue_offset;
  v->commitlog_offset = m->phys_offset;
  v->flag = m->flag;
  v->sys_flag = m->sys_flag;
  v->reconsume_times = m->reconsume_times;
  v->born_ts_ms = m->born_ts_ms;
  v->store_ts_ms = m->store_ts_ms;
  uint8_t *body = fy__cl_arena_alloc(a, m->body_len);
  if (!v->topic || !v->broker_name || !body)
    return -ENOMEM;
  if (m->body_len)
    memcpy(body, m->body, m->body_len);
  v->body = body;
  v->body_len = m->body_len;

  /* Properties: "key\1value\2" repeated (a missing last \2 tolerated). */
  const char *props_end = m->props + m->props_len, *pos, *k, *val;
  size_t n = 0, kl, vl;
  for (pos = m->props; fy_props_next(&pos, props_end, &k, &kl, &val, &vl);)
    n++;
  fy_kv *kv = fy__cl_arena_alloc(a, (n ? n : 1) * sizeof *kv);
  if (!kv)
    return -ENOMEM;
  size_t i = 0;
  v->tags = v->keys = v->msg_id = "";
  for (pos = m->props; i < n && fy_props_next(&pos, props_end, &k, &kl, &val, &vl); i++) {
    kv[i].key = fy__cl_arena_strndup(a, k, kl);
    kv[i].value = fy__cl_arena_strndup(a, val, vl);
    if (!kv[i].key || !kv[i].value)
      return -ENOMEM;
    if (!strcmp(kv[i].key, FY_PROP_TAGS))
      v->tags = kv[i].value;
    else if (!strcmp(kv[i].key, FY_PROP_KEYS))
      v->keys = kv[i].value;
    else if (!strcmp(kv[i].key, FY_PROP_UNIQ_KEY))
      v->msg_id = kv[i].value;
  }
  v->props = kv;
  v->nprops = i;

  char *oid = fy__cl_arena_alloc(a, FY_CLIENT_MSGID_MAX);
  char *born = fy__cl_arena_alloc(a, 64);
  char *store = fy__cl_arena_alloc(a, 64);
  if (!oid || !born || !store)
    return -ENOMEM;
  fy__offset_msgid(&m->store_host, m->phys_offset, oid, FY_CLIENT_MSGID_MAX);
  format_host(&m->born_host, born, 64);
  format_host(&m->store_host, store, 64);
  v->offset_msg_id = oid;
  v->born_host = born;
  v->store_host = store;
  if (!*v->msg_id)
    v->msg_id = oid;
  return 0;
}

int fy__records_walk(const uint8_t *raw, size_t len, uint32_t count, fy__record_fn fn,
                     void *arg) {
  size_t off = 0;
  for (uint32_t i = 0; i < count; i++) {
    size_t avail = len - off;
    const uint8_t *p = raw + off;
    if (avail < FY_RECORD_FIXED_V4)
      return -FY_ECORRUPT;
    uint64_t phys;
    memcpy(&phys, p + 28, 8); /* little-endian, like the record */
    enum fy_record_kind kind;
    struct fy_msg m;
    int64_t size = fy_record_decode(p, avail, phys, &kind, &m);
    if (size <= 0 || kind != FY_REC_MSG)
      return -FY_ECORRUPT;
    if (fn) {
      int err = fn(&m, arg);
      if (err)
        return err;
    }
    off += (size_t)size;
  }
  if (off != len)
    return -FY_ECORRUPT;
  return (int)count;
}

struct list_build {
  struct fy__arena *a;
  fy_message_view *views;
  size_t n;
  const char *broker_name;
  uint64_t broker_id;
};

static int list_add(const struct fy_msg *m, void *arg) {
  struct list_build *b = arg;
  return fy__msg_view_build(m, b->broker_name, b->broker_id, b->a, &b->views[b->n++]);
}

int fy__msg_list_build(const uint8_t *raw, size_t len, uint32_t count, const char *broker_name,
                       uint64_t broker_id, fy_message_list **out) {
  int err = fy__records_walk(raw, len, count, NULL, NULL);
  if (err < 0)
    return err;
  struct fy__arena *a;
  fy_message_list *l = fy__result_new(sizeof *l, len + (size_t)count * 512, &a);
  if (!l)
    return -ENOMEM;
  struct list_build b = {.a = a, .broker_name = broker_name, .broker_id = broker_id};
  b.views = fy__cl_arena_alloc(a, (count ? count : 1) * sizeof *b.views);
  if (!b.views) {
    fy_result_free(l);
    return -ENOMEM;
  }
  err = fy__records_walk(raw, len, count, list_add, &b);
  if (err < 0) {
    fy_result_free(l);
    return err;
  }
  l->msgs = b.views;
  l->n = b.n;
  *out = l;
  return 0;
}

/* ------------------------------------------------------------ subscriptions */

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int fy__sub_parse(struct fy__sub *s, const char *topic, const char *expr) {
  memset(s, 0, sizeof *s);
  size_t tl = topic ? strlen(topic) : 0;
  if (tl == 0 || tl >= sizeof s->topic)
    return -EINVAL;
  memcpy(s->topic, topic, tl + 1);
  const char *e = expr ? expr : "";
  while (is_space(*e))
    e++;
  size_t el = strlen(e);
  while (el > 0 && is_space(e[el - 1]))
    el--;
  if (el == 0 || (el == 1 && e[0] == '*')) {
    s->all = true;
    snprintf(s->expr, sizeof s->expr, "*");
    return 0;
  }
  if (el >= sizeof s->expr)
    return -EINVAL;
  memcpy(s->expr, e, el);
  s->expr[el] = '\0';
  memcpy(s->tagbuf, e, el);
  s->tagbuf[el] = '\0';
  /* Split on "||"; each part trimmed; empty parts dropped (RocketMQ). */
  char *p = s->tagbuf;
  for (;;) {
    char *bar = strstr(p, "||");
    if (bar)
      *bar = '\0';
    char *t = p;
    while (is_space(*t))
      t++;
    size_t n = strlen(t);
    while (n > 0 && is_space(t[n - 1]))
      t[--n] = '\0';
    if (n > 0) {
      bool dup = false;
      for (size_t i = 0; i < s->ntags; i++)
        dup |= strcmp(s->tags[i], t) == 0;
      if (!dup) {
        if (s->ntags == FY__TAGS_MAX)
          return -EINVAL;
        s->tags[s->ntags++] = t;
        int64_t h = fy_tag_hash(t, n);
        bool hdup = false;
        for (size_t i = 0; i < s->nhashes; i++)
          hdup |= s->hashes[i] == h;
        if (!hdup)
          s->hashes[s->nhashes++] = h;
      }
    }
    if (!bar)
      break;
    p = bar + 2;
  }
  return s->ntags ? 0 : -EINVAL;
}

bool fy__sub_match(const struct fy__sub *s, const char *tags) {
  if (s->all)
    return true;
  if (!tags || !*tags)
    return false;
  for (size_t i = 0; i < s->ntags; i++)
    if (strcmp(s->tags[i], tags) == 0)
      return true;
  return false;
}

/* ---------------------------------------------------------------- msg ids */

/* The start and end of the current UTC month in ms, cached per thread:
 * gmtime_r per message id showed in profiles. */
static int64_t month_start_ms(int64_t now) {
  static _Thread_local int64_t start = 1, end = 0; /* empty: computed on first use */
  if (now < start || now >= end) {
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int64_t into = (int64_t)(tm.tm_mday - 1) * 86400000 + (int64_t)tm.tm_hour * 3600000 +
                   (int64_t)tm.tm_min * 60000 + (int64_t)tm.tm_sec * 1000 + now % 1000;
    start = now - into;
    /* Valid up to the next midnight at least; the next call past it redoes
     * the arithmetic (and finds the new month when there is one). */
    end = now - (into % 86400000) + 86400000;
  }
  return start;
}

void fy__msgid_new(const fy_client *cl, char *out) { fy__msgid_new_at(cl, fy__cl_wall_ms(), out); }

void fy__msgid_new_at(const fy_client *cl, int64_t now, char *out) {
  static atomic_uint counter;
  uint8_t b[16];
  memcpy(b, cl->ip, 4);
  uint32_t pid = cl->pid;
  b[4] = (uint8_t)(pid >> 8);
  b[5] = (uint8_t)pid;
  uint32_t r = cl->msgid_rand;
  b[6] = (uint8_t)(r >> 24);
  b[7] = (uint8_t)(r >> 16);
  b[8] = (uint8_t)(r >> 8);
  b[9] = (uint8_t)r;
  /* Milliseconds since the start of the month (UTC), as RocketMQ's
   * MessageClientIDSetter does (it uses local time). */
  int64_t since = now - month_start_ms(now);
  uint32_t t = (uint32_t)since;
  b[10] = (uint8_t)(t >> 24);
  b[11] = (uint8_t)(t >> 16);
  b[12] = (uint8_t)(t >> 8);
  b[13] = (uint8_t)t;
  uint32_t c = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
  b[14] = (uint8_t)(c >> 8);
  b[15] = (uint8_t)c;
  hex_put(out, b, 16);
  out[32] = '\0';
}
