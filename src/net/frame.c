/*
 * The frame codec (layout in frame.h). Parsing is incremental and checks
 * each field the moment its bytes arrive, so a peer can never make us wait
 * for, or allocate, a frame we would refuse. The protobuf helpers put a
 * budget on unpacking: protobuf-c allocates per field while it decodes, and
 * a packed repeated empty sub-message (2 bytes) becomes a pointer plus a
 * struct of tens of bytes, so an unbounded unpack of a hostile frame could
 * cost many times the frame's size.
 */
#include "net/frame.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

_Static_assert(FY_FRAME_HEADER_LEN == 24, "frame header is 24 bytes on the wire");

#define OFF_MAGIC 0
#define OFF_VERSION 2
#define OFF_KIND 3
#define OFF_PAYLOAD_LEN 4
#define OFF_REQUEST_ID 8
#define OFF_OP 16
#define OFF_STATUS 18
#define OFF_HEADER_LEN 20

static inline void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)(v >> 16));
  put16(p + 2, (uint16_t)v);
}
static inline void put64(uint8_t *p, uint64_t v) {
  put32(p, (uint32_t)(v >> 32));
  put32(p + 4, (uint32_t)v);
}
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p) {
  return (uint32_t)get16(p) << 16 | get16(p + 2);
}
static inline uint64_t get64(const uint8_t *p) {
  return (uint64_t)get32(p) << 32 | get32(p + 4);
}

void fy_frame_encode_header(uint8_t out[FY_FRAME_HEADER_LEN], enum fy_frame_kind kind,
                            uint32_t payload_len, uint64_t request_id, uint16_t op,
                            uint16_t status, uint32_t header_len) {
  fy_assert(header_len <= payload_len);
  fy_assert((unsigned)kind <= FY_FRAME_ONEWAY);
  out[OFF_MAGIC] = FY_FRAME_MAGIC0;
  out[OFF_MAGIC + 1] = FY_FRAME_MAGIC1;
  out[OFF_VERSION] = FY_FRAME_VERSION;
  out[OFF_KIND] = (uint8_t)kind;
  put32(out + OFF_PAYLOAD_LEN, payload_len);
  put64(out + OFF_REQUEST_ID, request_id);
  put16(out + OFF_OP, op);
  put16(out + OFF_STATUS, status);
  put32(out + OFF_HEADER_LEN, header_len);
}

ssize_t fy_frame_parse(const uint8_t *buf, size_t len, uint32_t payload_max, fy_frame *f,
                       size_t *need) {
  f->kind = 0xff;
  f->header = f->raw = NULL;
  f->header_len = f->raw_len = 0;
  if (need)
    *need = FY_FRAME_HEADER_LEN;

  if (len > OFF_MAGIC && buf[OFF_MAGIC] != FY_FRAME_MAGIC0)
    return -FY_EFRAME_MAGIC;
  if (len > OFF_MAGIC + 1 && buf[OFF_MAGIC + 1] != FY_FRAME_MAGIC1)
    return -FY_EFRAME_MAGIC;

  /* Fields not yet received take a value that passes their check. */
  uint8_t version = len > OFF_VERSION ? buf[OFF_VERSION] : FY_FRAME_VERSION;
  uint8_t kind = len > OFF_KIND ? buf[OFF_KIND] : FY_FRAME_REQUEST;
  uint32_t payload_len = len >= OFF_REQUEST_ID ? get32(buf + OFF_PAYLOAD_LEN) : 0;
  if (len >= FY_FRAME_HEADER_LEN) {
    f->version = version;
    f->kind = kind;
    f->payload_len = payload_len;
    f->request_id = get64(buf + OFF_REQUEST_ID);
    f->op = get16(buf + OFF_OP);
    f->status = get16(buf + OFF_STATUS);
    f->header_len = get32(buf + OFF_HEADER_LEN);
  }
  if (version != FY_FRAME_VERSION)
    return -FY_EFRAME_VERSION;
  if (kind > FY_FRAME_ONEWAY)
    return -FY_EFRAME_KIND;
  if (payload_len > payload_max)
    return -FY_EFRAME_TOO_BIG;
  if (len < FY_FRAME_HEADER_LEN)
    return 0;
  if (f->header_len > payload_len)
    return -FY_EFRAME_HEADER;

  size_t total = (size_t)FY_FRAME_HEADER_LEN + payload_len;
  if (need)
    *need = total;
  if (len < total)
    return 0;
  f->header = buf + FY_FRAME_HEADER_LEN;
  f->raw = f->header + f->header_len;
  f->raw_len = payload_len - f->header_len;
  fy_assert(f->header_len + f->raw_len == f->payload_len);
  return (ssize_t)total;
}

/* ---------------------------------------------------------- protobuf helpers */

size_t fy_pb_packed_size(const ProtobufCMessage *msg) {
  return msg ? protobuf_c_message_get_packed_size(msg) : 0;
}

size_t fy_pb_pack(const ProtobufCMessage *msg, uint8_t *out) {
  return msg ? protobuf_c_message_pack(msg, out) : 0;
}

size_t fy_pb_alloc_limit(size_t len) {
  if (len > (SIZE_MAX - 16384) / 4)
    return SIZE_MAX;
  return 4 * len + 16384;
}

/* A malloc-backed allocator that refuses once the budget is spent. Frees do
 * not return budget: unpack allocates and only frees on failure, so the
 * budget bounds the total ever requested. Memory comes from malloc so the
 * result can be freed with protobuf-c's default allocator later. */
struct budget {
  size_t used;
  size_t max;
};

static void *budget_alloc(void *data, size_t size) {
  struct budget *b = data;
  if (size > b->max - b->used)
    return NULL;
  b->used += size;
  return malloc(size ? size : 1);
}

static void budget_free(void *data, void *ptr) { free(ptr); }

int fy_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                 size_t alloc_max, ProtobufCMessage **out) {
  fy_assert(desc != NULL);
  fy_assert(desc->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
  struct budget b = {.used = 0, .max = alloc_max};
  ProtobufCAllocator a = {.alloc = budget_alloc, .free = budget_free, .allocator_data = &b};
  /* protobuf-c reads data only within [data, data + len); an empty section
   * still needs a valid pointer. */
  static const uint8_t empty[1];
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, &a, len, len ? data : empty);
  fy_assert(b.used <= b.max);
  *out = m;
  return m ? 0 : -FY_EDECODE;
}

int fy_frame_unpack(const fy_frame *f, const ProtobufCMessageDescriptor *desc,
                    ProtobufCMessage **out) {
  return fy_pb_unpack(desc, f->header, f->header_len, fy_pb_alloc_limit(f->header_len), out);
}

/* Bump allocation within the budget, 8-byte aligned (the widest protobuf-c
 * field); the rounding counts against the budget. Frees (unpack's, after a
 * malformed section) return nothing: reset does. */
static void *arena_alloc(void *data, size_t size) {
  struct fy_pb_arena *a = data;
  size_t need = size > SIZE_MAX - 7 ? SIZE_MAX : (size + 7) & ~(size_t)7;
  if (need == 0)
    need = 8;
  if (need > a->max - a->used)
    return NULL;
  void *p = a->buf + a->used;
  a->used += need;
  return p;
}

static void arena_free(void *data, void *ptr) {
  (void)data;
  (void)ptr;
}

int fy_pb_unpack_in(struct fy_pb_arena *a, const ProtobufCMessageDescriptor *desc,
                    const uint8_t *data, size_t len, size_t alloc_max, ProtobufCMessage **out) {
  fy_assert(desc != NULL);
  fy_assert(desc->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
  *out = NULL;
  if (a->cap < alloc_max) {
    free(a->buf);
    a->cap = 0;
    a->buf = malloc(alloc_max); /* pages are touched only as far as unpacks reach */
    if (!a->buf)
      return -ENOMEM;
    a->cap = alloc_max;
  }
  a->used = 0;
  a->max = alloc_max;
  ProtobufCAllocator pa = {.alloc = arena_alloc, .free = arena_free, .allocator_data = a};
  static const uint8_t empty[1];
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, &pa, len, len ? data : empty);
  *out = m;
  return m ? 0 : -FY_EDECODE;
}

void fy_pb_arena_reset(struct fy_pb_arena *a) {
  a->used = 0;
  if (a->cap > FY_PB_ARENA_KEEP)
    fy_pb_arena_free(a);
}

void fy_pb_arena_free(struct fy_pb_arena *a) {
  free(a->buf);
  a->buf = NULL;
  a->cap = a->used = a->max = 0;
}

void fy_pb_free(ProtobufCMessage *msg) {
  if (msg)
    protobuf_c_message_free_unpacked(msg, NULL);
}
