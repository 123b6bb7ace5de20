/*
 * The name server's route table (RocketMQ's RouteInfoManager), as plain
 * data: brokers register and are dropped; clients ask for a topic's route.
 * No I/O here; the server feeds it requests, connection closes and the clock.
 *
 * Rules (RocketMQ's):
 *   - A broker is known by its address; brokers sharing a brokerName form a
 *     master (brokerId 0) / slave (brokerId > 0) group within a cluster.
 *   - Only a master's registration updates the topics of its brokerName:
 *     the topic list it sends replaces the brokerName's queue data.
 *   - A broker is dropped when its connection closes, when it unregisters,
 *     or after `expiry_ms` without a registration. When the last address of
 *     a brokerName is gone, its queue data goes too — so while a slave
 *     remains, routes still list the brokerName's queues and consumers can
 *     read from the slave.
 *   - A route is the queue data of every brokerName serving the topic plus
 *     every address of those brokerNames by brokerId.
 */
#ifndef FY_NAMESRV_ROUTES_H
#define FY_NAMESRV_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#define FY_NS_NAME_MAX 128
#define FY_NS_ADDR_MAX 64
#define FY_NS_TOPIC_MAX 256

typedef struct fy_routes fy_routes;

struct fy_ns_topic {
  char name[FY_NS_TOPIC_MAX];
  uint32_t read_queues, write_queues, perm;
};

struct fy_ns_registration {
  const char *cluster;
  const char *broker_name;
  const char *broker_addr;
  uint64_t broker_id;
  const char *ha_addr;
  const struct fy_ns_topic *topics; /* masters only; ignored for slaves */
  size_t ntopics;
  void *conn; /* the connection it came on, for drop-on-close */
};

struct fy_ns_queue_data {
  char broker_name[FY_NS_NAME_MAX];
  uint32_t read_queues, write_queues, perm;
};

struct fy_ns_broker_addr {
  uint64_t broker_id;
  char addr[FY_NS_ADDR_MAX];
};

struct fy_ns_broker_data {
  char cluster[FY_NS_NAME_MAX];
  char broker_name[FY_NS_NAME_MAX];
  struct fy_ns_broker_addr *addrs; /* sorted by broker_id */
  size_t naddrs;
};

/* A route or a cluster listing; free with fy_ns_route_free. */
struct fy_ns_route {
  struct fy_ns_queue_data *queues;
  size_t nqueues;
  struct fy_ns_broker_data *brokers;
  size_t nbrokers;
};

/* max_brokers bounds the registrations held (beyond: -FY_EBUSY). */
fy_routes *fy_routes_new(size_t max_brokers, size_t max_topics);
void fy_routes_free(fy_routes *r);

/* Registers or refreshes a broker at now_ms. Fills master_addr/ha_master_addr
 * (empty strings if the group has no master) for the reply. Returns 0,
 * -EINVAL for missing names or an address that is not host:port, -FY_EBUSY
 * when full. */
int fy_routes_register(fy_routes *r, const struct fy_ns_registration *reg, int64_t now_ms,
                       char master_addr[FY_NS_ADDR_MAX], char ha_master_addr[FY_NS_ADDR_MAX]);

/* Drops one broker by address. Returns 0 or -FY_ENOT_FOUND. */
int fy_routes_unregister(fy_routes *r, const char *broker_addr);

/* Drops every broker that registered on conn. Returns how many. */
size_t fy_routes_conn_closed(fy_routes *r, void *conn);

/* Drops brokers silent for more than expiry_ms. Returns how many; each is
 * logged. */
size_t fy_routes_expire(fy_routes *r, int64_t now_ms, int64_t expiry_ms);

/* Forgets topic's queue data: of every brokerName, or with cluster set
 * (non-NULL, non-empty) only of the brokerNames registered in that cluster.
 * Returns how many brokerNames' queue data went (0 for an unknown topic).
 * A master that still has the topic brings it back with its next
 * registration, as in RocketMQ: delete it on the brokers first. */
size_t fy_routes_delete_topic(fy_routes *r, const char *topic, const char *cluster);

/* Route of topic. Returns 0, -FY_ENOT_FOUND (no such topic), -ENOMEM. */
int fy_routes_get(const fy_routes *r, const char *topic, struct fy_ns_route *out);

/* Every brokerName with its addresses (queues left empty). */
int fy_routes_cluster_info(const fy_routes *r, struct fy_ns_route *out);

/* Names of all topics; *names is one malloc'ed array of n pointers into the
 * same allocation. */
int fy_routes_topic_list(const fy_routes *r, char ***names, size_t *n);

void fy_ns_route_free(struct fy_ns_route *route);

size_t fy_routes_broker_count(const fy_routes *r);

#endif
