/*
 * CRC32C (Castagnoli), the checksum of every commit-log record. Uses the
 * SSE4.2 crc32 instruction when the CPU has it, a slicing-by-8 table otherwise.
 */
#ifndef FY_COMMON_CRC32C_H
#define FY_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over len bytes of buf. fy_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t fy_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
