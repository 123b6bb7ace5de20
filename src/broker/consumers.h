/*
 * Live consumer clients, from their heartbeats: which clients are in which
 * consumer group, what they subscribe to, and on which connection. Clients
 * go when their connection closes, when they unregister, or after
 * expiry_ms without a heartbeat. Plain data; the broker feeds it.
 */
#ifndef FY_BROKER_CONSUMERS_H
#define FY_BROKER_CONSUMERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FY_CLIENT_ID_MAX 256
#define FY_CONSUMER_GROUPS_PER_CLIENT 64
#define FY_SUBS_PER_GROUP 16

typedef struct fy_consumers fy_consumers;

struct fy_subscription {
  char topic[128];
  char expression[128];
};

struct fy_consumer_group_info {
  char group[256];
  bool broadcasting;
  char consume_from[32];
  struct fy_subscription subs[FY_SUBS_PER_GROUP];
  size_t nsubs;
};

fy_consumers *fy_consumers_new(size_t max_clients);
void fy_consumers_free(fy_consumers *c);

/* Records a heartbeat: replaces the client's groups with groups[0..n).
 * Returns 0, -EINVAL (empty or long client id, too many groups),
 * -FY_EBUSY (table full). */
int fy_consumers_heartbeat(fy_consumers *c, const char *client_id, void *conn,
                           const struct fy_consumer_group_info *groups, size_t n, int64_t now_ms);

/* Removes a client from one group (group NULL: from all; the client goes). */
void fy_consumers_unregister(fy_consumers *c, const char *client_id, const char *group);

/* Removes every client that heartbeated on conn. Returns how many. */
size_t fy_consumers_conn_closed(fy_consumers *c, void *conn);

/* Removes clients silent for more than expiry_ms. Returns how many. */
size_t fy_consumers_expire(fy_consumers *c, int64_t now_ms, int64_t expiry_ms);

/* Client ids in group, sorted. *ids is one malloc'ed block (free it). */
int fy_consumers_list(const fy_consumers *c, const char *group, char ***ids, size_t *n);

/* The subscription of group to topic from any live client; false if none. */
bool fy_consumers_subscription(const fy_consumers *c, const char *group, const char *topic,
                               struct fy_subscription *out);

/* Whether group has live clients. */
bool fy_consumers_group_online(const fy_consumers *c, const char *group);

size_t fy_consumers_count(const fy_consumers *c);

/* cb(arg, group) runs whenever a client joins or leaves group (heartbeat,
 * unregister, connection close, expiry), after the table has changed. cb
 * must not change the table. */
void fy_consumers_on_change(fy_consumers *c, void (*cb)(void *arg, const char *group), void *arg);

/* The connections of up to max clients in group; returns how many. */
size_t fy_consumers_conns(const fy_consumers *c, const char *group, void **out, size_t max);

#endif
