/*
 * Queue allocation for clustering consumers: RocketMQ's
 * AllocateMessageQueueAveragely, kept as a pure function so that every
 * member of a group, given the same sorted queues and sorted client ids,
 * computes the same disjoint cover of the queues (tested exhaustively for
 * small sizes in tests/unit/test_client_alloc.c).
 */
#include "client/cl_int.h"

void fy__alloc_averagely(size_t n, size_t c, size_t i, size_t *first, size_t *count) {
  *first = 0;
  *count = 0;
  if (c == 0 || i >= c || n == 0)
    return;
  /* RocketMQ, with its int arithmetic made explicit:
   *   mod = n % c
   *   avg = n <= c ? 1 : (mod > 0 && i < mod ? n / c + 1 : n / c)
   *   start = mod > 0 && i < mod ? i * avg : i * avg + mod
   *   range = min(avg, n - start)  (none when negative) */
  size_t mod = n % c;
  size_t avg = n <= c ? 1 : (mod > 0 && i < mod ? n / c + 1 : n / c);
  size_t start = (mod > 0 && i < mod) ? i * avg : i * avg + mod;
  if (start >= n)
    return;
  size_t range = avg < n - start ? avg : n - start;
  *first = start;
  *count = range;
}
