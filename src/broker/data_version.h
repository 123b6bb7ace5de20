/*
 * RocketMQ's DataVersion for a metadata table (topics, subscription groups):
 * a counter bumped on every change plus the wall-clock time of that change.
 * A slave copies the master's table when the versions (or tables) differ.
 */
#ifndef FY_BROKER_DATA_VERSION_H
#define FY_BROKER_DATA_VERSION_H

#include <stdbool.h>
#include <stdint.h>

struct fy_data_version {
  uint64_t counter;
  int64_t timestamp_ms; /* wall clock of the last change */
};

bool fy_data_version_equal(const struct fy_data_version *a, const struct fy_data_version *b);

#endif
