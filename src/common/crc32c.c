/*
 * CRC32C with a hardware path (x86 SSE4.2) chosen once at first use and a
 * portable slicing-by-8 fallback. Both compute the same reflected CRC with
 * polynomial 0x82F63B78, initial value ~0 and final xor ~0.
 */
#include "common/crc32c.h"

#include <string.h>

static uint32_t table[8][256];

static void build_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t len) {
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= crc;
    crc = table[7][w & 0xFF] ^ table[6][(w >> 8) & 0xFF] ^ table[5][(w >> 16) & 0xFF] ^
          table[4][(w >> 24) & 0xFF] ^ table[3][(w >> 32) & 0xFF] ^
          table[2][(w >> 40) & 0xFF] ^ table[1][(w >> 48) & 0xFF] ^ table[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                          size_t len) {
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (len--)
    c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}
#endif

typedef uint32_t (*crc_fn)(uint32_t, const unsigned char *, size_t);

static crc_fn pick(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2"))
    return crc_hw;
#endif
  return crc_sw;
}

/* Exposed for the unit test that checks both paths agree. */
uint32_t fy__crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t fy__crc32c_sw(uint32_t crc, const void *buf, size_t len) {
  return ~crc_sw(~crc, buf, len);
}

static crc_fn crc_impl;

/* Runs before main and before any thread exists, so no lazy-init race. */
__attribute__((constructor)) static void crc32c_init(void) {
  build_table();
  crc_impl = pick();
}

uint32_t fy_crc32c(uint32_t crc, const void *buf, size_t len) {
  return ~crc_impl(~crc, buf, len);
}
