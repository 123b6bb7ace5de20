/*
 * Route table of the name server; rules in routes.h. Sizes are small
 * (brokers in the hundreds, topics in the thousands), so lookups across
 * brokers are linear scans over a bounded table; topics are hashed.
 */
#include "namesrv/routes.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/strmap.h"

#define MOD "namesrv"

struct broker {
  char cluster[FY_NS_NAME_MAX];
  char name[FY_NS_NAME_MAX];
  char addr[FY_NS_ADDR_MAX];
  char ha_addr[FY_NS_ADDR_MAX];
  uint64_t id;
  int64_t last_ms;
  void *conn;
};

struct topic {
  struct fy_ns_queue_data *qd;
  size_t n, cap;
};

struct fy_routes {
  struct broker *brokers; /* dense array */
  size_t nbrokers, max_brokers;
  fy_strmap *topics; /* name -> struct topic */
  size_t max_topics;
};

fy_routes *fy_routes_new(size_t max_brokers, size_t max_topics) {
  fy_routes *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->brokers = calloc(max_brokers, sizeof *r->brokers);
  r->topics = fy_strmap_new();
  r->max_brokers = max_brokers;
  r->max_topics = max_topics;
  if (!r->brokers || !r->topics) {
    fy_routes_free(r);
    return NULL;
  }
  return r;
}

static void topic_free(struct topic *t) {
  free(t->qd);
  free(t);
}

void fy_routes_free(fy_routes *r) {
  if (!r)
    return;
  if (r->topics) {
    size_t pos = 0, klen;
    const char *k;
    void *v;
    while (fy_strmap_next(r->topics, &pos, &k, &klen, &v))
      topic_free(v);
    fy_strmap_free(r->topics);
  }
  free(r->brokers);
  free(r);
}

static struct broker *find_addr(const fy_routes *r, const char *addr) {
  for (size_t i = 0; i < r->nbrokers; i++)
    if (strcmp(r->brokers[i].addr, addr) == 0)
      return &r->brokers[i];
  return NULL;
}

static bool name_alive(const fy_routes *r, const char *name) {
  for (size_t i = 0; i < r->nbrokers; i++)
    if (strcmp(r->brokers[i].name, name) == 0)
      return true;
  return false;
}

static bool valid_addr(const char *a) {
  const char *colon = strrchr(a, ':');
  if (!colon || colon == a || !colon[1] || strlen(a) >= FY_NS_ADDR_MAX)
    return false;
  for (const char *p = colon + 1; *p; p++)
    if (*p < '0' || *p > '9')
      return false;
  long port = strtol(colon + 1, NULL, 10);
  return port > 0 && port < 65536;
}

static bool valid_name(const char *s) { return s && *s && strlen(s) < FY_NS_NAME_MAX; }

/* Removes broker_name's queue data from topic t; drops the topic if empty. */
static void topic_remove_name(fy_routes *r, const char *topic, struct topic *t, const char *name) {
  for (size_t i = 0; i < t->n; i++) {
    if (strcmp(t->qd[i].broker_name, name) == 0) {
      t->qd[i] = t->qd[--t->n];
      break;
    }
  }
  if (t->n == 0)
    topic_free(fy_strmap_del(r->topics, topic, strlen(topic)));
}

/* Drops every topic's queue data of brokerName name. */
static void remove_name_everywhere(fy_routes *r, const char *name) {
  const char *victims[256];
  for (;;) {
    size_t nv = 0, pos = 0, klen;
    const char *k;
    void *v;
    while (nv < 256 && fy_strmap_next(r->topics, &pos, &k, &klen, &v)) {
      struct topic *t = v;
      for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->qd[i].broker_name, name) == 0) {
          victims[nv++] = k;
          break;
        }
    }
    if (nv == 0)
      return;
    /* Keys stay valid until deleted; copy names before mutating. */
    char names[256][FY_NS_TOPIC_MAX];
    for (size_t i = 0; i < nv; i++)
      snprintf(names[i], sizeof names[i], "%s", victims[i]);
    for (size_t i = 0; i < nv; i++) {
      struct topic *t = fy_strmap_get(r->topics, names[i], strlen(names[i]));
      if (t)
        topic_remove_name(r, names[i], t, name);
    }
    if (nv < 256)
      return;
  }
}

static bool name_in_cluster(const fy_routes *r, const char *name, const char *cluster) {
  for (size_t i = 0; i < r->nbrokers; i++)
    if (strcmp(r->brokers[i].name, name) == 0 && strcmp(r->brokers[i].cluster, cluster) == 0)
      return true;
  return false;
}

size_t fy_routes_delete_topic(fy_routes *r, const char *topic, const char *cluster) {
  struct topic *t = fy_strmap_get(r->topics, topic, strlen(topic));
  if (!t)
    return 0;
  size_t removed = 0;
  for (size_t i = 0; i < t->n;) {
    if (!cluster || !*cluster || name_in_cluster(r, t->qd[i].broker_name, cluster)) {
      t->qd[i] = t->qd[--t->n];
      removed++;
    } else {
      i++;
    }
  }
  if (t->n == 0)
    topic_free(fy_strmap_del(r->topics, topic, strlen(topic)));
  return removed;
}

static void drop_broker(fy_routes *r, size_t idx, const char *why) {
  struct broker b = r->brokers[idx];
  r->brokers[idx] = r->brokers[--r->nbrokers];
  fy_info(MOD, "dropped broker %s (%s/%s id %" PRIu64 "): %s", b.addr, b.cluster, b.name, b.id,
          why);
  if (!name_alive(r, b.name))
    remove_name_everywhere(r, b.name);
}

static int upsert_topic(fy_routes *r, const char *name, const struct fy_ns_topic *tc) {
  size_t tlen = strnlen(tc->name, FY_NS_TOPIC_MAX);
  if (tlen == 0 || tlen >= FY_NS_TOPIC_MAX)
    return -EINVAL;
  struct topic *t = fy_strmap_get(r->topics, tc->name, tlen);
  if (!t) {
    if (fy_strmap_size(r->topics) >= r->max_topics)
      return -FY_EBUSY;
    t = calloc(1, sizeof *t);
    if (!t || fy_strmap_put(r->topics, tc->name, tlen, t)) {
      free(t);
      return -ENOMEM;
    }
  }
  struct fy_ns_queue_data *q = NULL;
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->qd[i].broker_name, name) == 0)
      q = &t->qd[i];
  if (!q) {
    if (t->n == t->cap) {
      size_t ncap = t->cap ? t->cap * 2 : 4;
      struct fy_ns_queue_data *nq = realloc(t->qd, ncap * sizeof *nq);
      if (!nq)
        return -ENOMEM;
      t->qd = nq;
      t->cap = ncap;
    }
    q = &t->qd[t->n++];
    snprintf(q->broker_name, sizeof q->broker_name, "%s", name);
  }
  q->read_queues = tc->read_queues;
  q->write_queues = tc->write_queues;
  q->perm = tc->perm;
  return 0;
}

/* A master's topic list replaces its brokerName's queue data. */
static int set_master_topics(fy_routes *r, const char *name, const struct fy_ns_topic *topics,
                             size_t n) {
  /* Drop topics no longer listed. */
  char stale[64][FY_NS_TOPIC_MAX];
  for (;;) {
    size_t ns = 0, pos = 0, klen;
    const char *k;
    void *v;
    while (ns < 64 && fy_strmap_next(r->topics, &pos, &k, &klen, &v)) {
      struct topic *t = v;
      bool has = false, listed = false;
      for (size_t i = 0; i < t->n && !has; i++)
        has = strcmp(t->qd[i].broker_name, name) == 0;
      for (size_t i = 0; has && i < n && !listed; i++)
        listed = strcmp(topics[i].name, k) == 0;
      if (has && !listed)
        snprintf(stale[ns++], FY_NS_TOPIC_MAX, "%s", k);
    }
    for (size_t i = 0; i < ns; i++) {
      struct topic *t = fy_strmap_get(r->topics, stale[i], strlen(stale[i]));
      if (t)
        topic_remove_name(r, stale[i], t, name);
    }
    if (ns < 64)
      break;
  }
  for (size_t i = 0; i < n; i++) {
    int err = upsert_topic(r, name, &topics[i]);
    if (err)
      return err;
  }
  return 0;
}

int fy_routes_register(fy_routes *r, const struct fy_ns_registration *reg, int64_t now_ms,
                       char master_addr[FY_NS_ADDR_MAX], char ha_master_addr[FY_NS_ADDR_MAX]) {
  if (!valid_name(reg->cluster) || !valid_name(reg->broker_name) || !reg->broker_addr ||
      !valid_addr(reg->broker_addr) || (reg->ha_addr && *reg->ha_addr && !valid_addr(reg->ha_addr)))
    return -EINVAL;
  struct broker *b = find_addr(r, reg->broker_addr);
  if (b && (strcmp(b->name, reg->broker_name) != 0 || b->id != reg->broker_id)) {
    /* The address now serves another role: forget the old registration. */
    drop_broker(r, (size_t)(b - r->brokers), "re-registered with another name or id");
    b = NULL;
  }
  if (!b) {
    /* A new broker replaces any other address registered for the same name and id. */
    for (size_t i = 0; i < r->nbrokers; i++)
      if (strcmp(r->brokers[i].name, reg->broker_name) == 0 && r->brokers[i].id == reg->broker_id) {
        drop_broker(r, i, "replaced by a new address");
        break;
      }
    if (r->nbrokers == r->max_brokers)
      return -FY_EBUSY;
    b = &r->brokers[r->nbrokers++];
    memset(b, 0, sizeof *b);
    snprintf(b->addr, sizeof b->addr, "%s", reg->broker_addr);
    fy_info(MOD, "registered broker %s (%s/%s id %" PRIu64 ")", reg->broker_addr, reg->cluster,
            reg->broker_name, reg->broker_id);
  }
  snprintf(b->cluster, sizeof b->cluster, "%s", reg->cluster);
  snprintf(b->name, sizeof b->name, "%s", reg->broker_name);
  snprintf(b->ha_addr, sizeof b->ha_addr, "%s", reg->ha_addr ? reg->ha_addr : "");
  b->id = reg->broker_id;
  b->last_ms = now_ms;
  b->conn = reg->conn;
  int err = 0;
  if (reg->broker_id == 0)
    err = set_master_topics(r, reg->broker_name, reg->topics, reg->ntopics);
  master_addr[0] = ha_master_addr[0] = '\0';
  for (size_t i = 0; i < r->nbrokers; i++)
    if (strcmp(r->brokers[i].name, reg->broker_name) == 0 && r->brokers[i].id == 0) {
      snprintf(master_addr, FY_NS_ADDR_MAX, "%s", r->brokers[i].addr);
      snprintf(ha_master_addr, FY_NS_ADDR_MAX, "%s", r->brokers[i].ha_addr);
    }
  return err;
}

int fy_routes_unregister(fy_routes *r, const char *broker_addr) {
  struct broker *b = find_addr(r, broker_addr);
  if (!b)
    return -FY_ENOT_FOUND;
  drop_broker(r, (size_t)(b - r->brokers), "unregistered");
  return 0;
}

size_t fy_routes_conn_closed(fy_routes *r, void *conn) {
  size_t n = 0;
  for (size_t i = 0; i < r->nbrokers;) {
    if (r->brokers[i].conn == conn) {
      drop_broker(r, i, "connection closed");
      n++;
    } else {
      i++;
    }
  }
  return n;
}

size_t fy_routes_expire(fy_routes *r, int64_t now_ms, int64_t expiry_ms) {
  size_t n = 0;
  for (size_t i = 0; i < r->nbrokers;) {
    if (now_ms - r->brokers[i].last_ms > expiry_ms) {
      drop_broker(r, i, "no registration within the expiry time");
      n++;
    } else {
      i++;
    }
  }
  return n;
}

static int cmp_addr(const void *a, const void *b) {
  uint64_t x = ((const struct fy_ns_broker_addr *)a)->broker_id;
  uint64_t y = ((const struct fy_ns_broker_addr *)b)->broker_id;
  return x < y ? -1 : x > y;
}

/* Fills bd with every address of brokerName name. */
static int broker_data(const fy_routes *r, const char *name, struct fy_ns_broker_data *bd) {
  memset(bd, 0, sizeof *bd);
  snprintf(bd->broker_name, sizeof bd->broker_name, "%s", name);
  bd->addrs = calloc(r->nbrokers ? r->nbrokers : 1, sizeof *bd->addrs);
  if (!bd->addrs)
    return -ENOMEM;
  for (size_t i = 0; i < r->nbrokers; i++) {
    const struct broker *b = &r->brokers[i];
    if (strcmp(b->name, name) != 0)
      continue;
    snprintf(bd->cluster, sizeof bd->cluster, "%s", b->cluster);
    bd->addrs[bd->naddrs].broker_id = b->id;
    snprintf(bd->addrs[bd->naddrs].addr, FY_NS_ADDR_MAX, "%s", b->addr);
    bd->naddrs++;
  }
  qsort(bd->addrs, bd->naddrs, sizeof *bd->addrs, cmp_addr);
  return 0;
}

int fy_routes_get(const fy_routes *r, const char *topic, struct fy_ns_route *out) {
  memset(out, 0, sizeof *out);
  const struct topic *t = fy_strmap_get(r->topics, topic, strlen(topic));
  if (!t || t->n == 0)
    return -FY_ENOT_FOUND;
  out->queues = calloc(t->n, sizeof *out->queues);
  out->brokers = calloc(t->n, sizeof *out->brokers);
  if (!out->queues || !out->brokers) {
    fy_ns_route_free(out);
    return -ENOMEM;
  }
  for (size_t i = 0; i < t->n; i++) {
    out->queues[out->nqueues++] = t->qd[i];
    if (broker_data(r, t->qd[i].broker_name, &out->brokers[out->nbrokers]) != 0) {
      fy_ns_route_free(out);
      return -ENOMEM;
    }
    out->nbrokers++;
  }
  return 0;
}

int fy_routes_cluster_info(const fy_routes *r, struct fy_ns_route *out) {
  memset(out, 0, sizeof *out);
  out->brokers = calloc(r->nbrokers ? r->nbrokers : 1, sizeof *out->brokers);
  if (!out->brokers)
    return -ENOMEM;
  for (size_t i = 0; i < r->nbrokers; i++) {
    bool seen = false;
    for (size_t j = 0; j < out->nbrokers && !seen; j++)
      seen = strcmp(out->brokers[j].broker_name, r->brokers[i].name) == 0;
    if (seen)
      continue;
    if (broker_data(r, r->brokers[i].name, &out->brokers[out->nbrokers]) != 0) {
      fy_ns_route_free(out);
      return -ENOMEM;
    }
    out->nbrokers++;
  }
  return 0;
}

int fy_routes_topic_list(const fy_routes *r, char ***names, size_t *n) {
  size_t count = fy_strmap_size(r->topics), bytes = 0, pos = 0, klen;
  const char *k;
  void *v;
  while (fy_strmap_next(r->topics, &pos, &k, &klen, &v))
    bytes += klen + 1;
  char **arr = malloc(count * sizeof(char *) + bytes + 1);
  if (!arr)
    return -ENOMEM;
  char *p = (char *)(arr + count);
  size_t i = 0;
  pos = 0;
  while (fy_strmap_next(r->topics, &pos, &k, &klen, &v)) {
    memcpy(p, k, klen);
    p[klen] = '\0';
    arr[i++] = p;
    p += klen + 1;
  }
  *names = arr;
  *n = count;
  return 0;
}

void fy_ns_route_free(struct fy_ns_route *route) {
  for (size_t i = 0; i < route->nbrokers; i++)
    free(route->brokers[i].addrs);
  free(route->brokers);
  free(route->queues);
  memset(route, 0, sizeof *route);
}

size_t fy_routes_broker_count(const fy_routes *r) { return r->nbrokers; }
