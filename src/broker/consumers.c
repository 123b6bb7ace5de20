/*
 * Consumer-client registry (see consumers.h). Clients are few (thousands at
 * most, bounded by max_clients) and listing a group is rare (rebalances), so
 * a dense array scanned linearly is enough and keeps ownership simple.
 */
#include "broker/consumers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

#define MOD "consumers"

struct client {
  char id[FY_CLIENT_ID_MAX];
  void *conn;
  int64_t last_ms;
  struct fy_consumer_group_info *groups; /* malloc'ed, n */
  size_t ngroups;
};

struct fy_consumers {
  struct client *clients;
  size_t n, max;
  void (*changed)(void *arg, const char *group);
  void *changed_arg;
};

void fy_consumers_on_change(fy_consumers *c, void (*cb)(void *arg, const char *group), void *arg) {
  c->changed = cb;
  c->changed_arg = arg;
}

static bool has_group(const struct fy_consumer_group_info *g, size_t n, const char *group) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(g[i].group, group) == 0)
      return true;
  return false;
}

/* Reports the groups in a[0..na) that are not in b[0..nb). */
static void report_missing(fy_consumers *c, const struct fy_consumer_group_info *a, size_t na,
                           const struct fy_consumer_group_info *b, size_t nb) {
  if (!c->changed)
    return;
  for (size_t i = 0; i < na; i++)
    if (!has_group(b, nb, a[i].group))
      c->changed(c->changed_arg, a[i].group);
}

fy_consumers *fy_consumers_new(size_t max_clients) {
  fy_consumers *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->clients = calloc(max_clients ? max_clients : 1, sizeof *c->clients);
  if (!c->clients) {
    free(c);
    return NULL;
  }
  c->max = max_clients;
  return c;
}

void fy_consumers_free(fy_consumers *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->n; i++)
    free(c->clients[i].groups);
  free(c->clients);
  free(c);
}

static struct client *find(const fy_consumers *c, const char *id) {
  for (size_t i = 0; i < c->n; i++)
    if (strcmp(c->clients[i].id, id) == 0)
      return &c->clients[i];
  return NULL;
}

static void remove_at(fy_consumers *c, size_t i, const char *why) {
  fy_info(MOD, "consumer client %s gone: %s", c->clients[i].id, why);
  struct fy_consumer_group_info *groups = c->clients[i].groups;
  size_t n = c->clients[i].ngroups;
  c->clients[i] = c->clients[--c->n];
  report_missing(c, groups, n, NULL, 0); /* after the removal: the group no longer lists it */
  free(groups);
}

int fy_consumers_heartbeat(fy_consumers *c, const char *client_id, void *conn,
                           const struct fy_consumer_group_info *groups, size_t n, int64_t now_ms) {
  if (!client_id || !*client_id || strlen(client_id) >= FY_CLIENT_ID_MAX ||
      n > FY_CONSUMER_GROUPS_PER_CLIENT)
    return -EINVAL;
  struct client *cl = find(c, client_id);
  if (!cl) {
    if (n == 0)
      return 0; /* a producer-only heartbeat: nothing to track */
    if (c->n == c->max)
      return -FY_EBUSY;
    cl = &c->clients[c->n++];
    memset(cl, 0, sizeof *cl);
    memcpy(cl->id, client_id, strlen(client_id) + 1);
    fy_info(MOD, "consumer client %s joined", client_id);
  }
  struct fy_consumer_group_info *copy = NULL;
  if (n) {
    copy = malloc(n * sizeof *copy);
    if (!copy)
      return -ENOMEM;
    memcpy(copy, groups, n * sizeof *copy);
  }
  struct fy_consumer_group_info *old = cl->groups;
  size_t nold = cl->ngroups;
  cl->groups = copy;
  cl->ngroups = n;
  cl->conn = conn;
  cl->last_ms = now_ms;
  report_missing(c, old, nold, copy, n); /* groups left */
  report_missing(c, copy, n, old, nold); /* groups joined */
  free(old);
  return 0;
}

void fy_consumers_unregister(fy_consumers *c, const char *client_id, const char *group) {
  for (size_t i = 0; i < c->n; i++) {
    struct client *cl = &c->clients[i];
    if (strcmp(cl->id, client_id) != 0)
      continue;
    if (!group) {
      remove_at(c, i, "unregistered");
      return;
    }
    for (size_t g = 0; g < cl->ngroups; g++)
      if (strcmp(cl->groups[g].group, group) == 0) {
        struct fy_consumer_group_info left = cl->groups[g];
        cl->groups[g] = cl->groups[--cl->ngroups];
        if (cl->ngroups == 0)
          remove_at(c, i, "left its last group");
        report_missing(c, &left, 1, NULL, 0);
        return;
      }
    return;
  }
}

size_t fy_consumers_conn_closed(fy_consumers *c, void *conn) {
  size_t removed = 0;
  for (size_t i = 0; i < c->n;) {
    if (c->clients[i].conn == conn) {
      remove_at(c, i, "connection closed");
      removed++;
    } else {
      i++;
    }
  }
  return removed;
}

size_t fy_consumers_expire(fy_consumers *c, int64_t now_ms, int64_t expiry_ms) {
  size_t removed = 0;
  for (size_t i = 0; i < c->n;) {
    if (now_ms - c->clients[i].last_ms > expiry_ms) {
      remove_at(c, i, "no heartbeat within clientChannelExpiredTime");
      removed++;
    } else {
      i++;
    }
  }
  return removed;
}

static bool in_group(const struct client *cl, const char *group) {
  for (size_t g = 0; g < cl->ngroups; g++)
    if (strcmp(cl->groups[g].group, group) == 0)
      return true;
  return false;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int fy_consumers_list(const fy_consumers *c, const char *group, char ***ids, size_t *n) {
  size_t count = 0;
  for (size_t i = 0; i < c->n; i++)
    count += in_group(&c->clients[i], group);
  char **arr = malloc(count * sizeof(char *) + count * FY_CLIENT_ID_MAX + 1);
  if (!arr)
    return -ENOMEM;
  char *p = (char *)(arr + count);
  size_t k = 0;
  for (size_t i = 0; i < c->n; i++) {
    if (!in_group(&c->clients[i], group))
      continue;
    memcpy(p, c->clients[i].id, FY_CLIENT_ID_MAX);
    arr[k++] = p;
    p += FY_CLIENT_ID_MAX;
  }
  qsort(arr, count, sizeof *arr, cmp_str);
  *ids = arr;
  *n = count;
  return 0;
}

size_t fy_consumers_conns(const fy_consumers *c, const char *group, void **out, size_t max) {
  size_t k = 0;
  for (size_t i = 0; i < c->n && k < max; i++)
    if (in_group(&c->clients[i], group))
      out[k++] = c->clients[i].conn;
  return k;
}

bool fy_consumers_subscription(const fy_consumers *c, const char *group, const char *topic,
                               struct fy_subscription *out) {
  for (size_t i = 0; i < c->n; i++) {
    const struct client *cl = &c->clients[i];
    for (size_t g = 0; g < cl->ngroups; g++) {
      if (strcmp(cl->groups[g].group, group) != 0)
        continue;
      for (size_t s = 0; s < cl->groups[g].nsubs; s++)
        if (strcmp(cl->groups[g].subs[s].topic, topic) == 0) {
          *out = cl->groups[g].subs[s];
          return true;
        }
    }
  }
  return false;
}

bool fy_consumers_group_online(const fy_consumers *c, const char *group) {
  for (size_t i = 0; i < c->n; i++)
    if (in_group(&c->clients[i], group))
      return true;
  return false;
}

size_t fy_consumers_count(const fy_consumers *c) { return c->n; }
