/*
 * Ferry's native frame: a 24-byte header, then a protobuf header section,
 * then a raw section. proto/ferry.proto's opening comment is the contract;
 * the layout again, all integers big-endian:
 *
 *   off size field
 *     0    2 magic 'F' 'Y'
 *     2    1 version (1)
 *     3    1 kind (enum fy_frame_kind)
 *     4    4 payload length: bytes after the 24-byte header
 *     8    8 request id
 *    16    2 op (ferry.v1.Op)
 *    18    2 status (ferry.v1.Status; 0 in requests)
 *    20    4 header length: the protobuf part of the payload; the rest is raw
 *
 * This module only encodes and parses bytes; it knows nothing of sockets.
 * The protobuf helpers below are the one place that packs and unpacks a
 * header section, so every unpack goes through the bounded allocator.
 */
#ifndef FY_NET_FRAME_H
#define FY_NET_FRAME_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FY_FRAME_HEADER_LEN 24
#define FY_FRAME_MAGIC0 0x46 /* 'F': also how a port tells Ferry from RocketMQ */
#define FY_FRAME_MAGIC1 0x59 /* 'Y' */
#define FY_FRAME_VERSION 1

/* Default payload limit (bytes after the 24-byte header). */
#define FY_FRAME_MAX_DEFAULT (16u << 20)

enum fy_frame_kind {
  FY_FRAME_REQUEST = 0,
  FY_FRAME_RESPONSE = 1,
  FY_FRAME_ONEWAY = 2, /* a request that gets no response */
};

/* A parsed frame. header and raw point into the buffer that was parsed and
 * are valid only as long as it is. */
typedef struct fy_frame {
  uint8_t version;
  uint8_t kind;           /* enum fy_frame_kind */
  uint32_t payload_len;   /* header_len + raw_len */
  uint64_t request_id;
  uint16_t op;
  uint16_t status;
  const uint8_t *header;  /* protobuf section */
  uint32_t header_len;
  const uint8_t *raw;     /* raw section */
  uint32_t raw_len;
} fy_frame;

/* Writes the 24-byte header into out. */
void fy_frame_encode_header(uint8_t out[FY_FRAME_HEADER_LEN], enum fy_frame_kind kind,
                            uint32_t payload_len, uint64_t request_id, uint16_t op,
                            uint16_t status, uint32_t header_len);

/*
 * Parses one frame from the start of buf (len bytes). Returns:
 *   > 0  the frame's total size (24 + payload); *f is filled in;
 *     0  more bytes are needed (a strict prefix of a frame that is valid so
 *        far); if need is not NULL, *need is the total size of the frame
 *        once its header is in, else FY_FRAME_HEADER_LEN;
 *   < 0  -FY_EFRAME_MAGIC, -FY_EFRAME_VERSION, -FY_EFRAME_KIND,
 *        -FY_EFRAME_TOO_BIG (payload > payload_max) or -FY_EFRAME_HEADER
 *        (header length > payload length).
 * Fields are checked as soon as their bytes are in, so a bad magic is
 * rejected after one byte and an oversized payload after eight: nothing is
 * ever allocated for a frame that fails. On an error with all 24 header
 * bytes in and a good magic, *f's header fields (not header/raw) are filled
 * so the caller can answer the request id; otherwise f->kind is 0xff.
 * Allocates nothing and never reads past buf + len.
 */
ssize_t fy_frame_parse(const uint8_t *buf, size_t len, uint32_t payload_max, fy_frame *f,
                       size_t *need);

/* ---------------------------------------------------------- protobuf helpers */

/* Bytes msg packs to; 0 for NULL. */
size_t fy_pb_packed_size(const ProtobufCMessage *msg);

/* Packs msg (NULL packs nothing) into out, which must hold
 * fy_pb_packed_size(msg) bytes; returns the bytes written. */
size_t fy_pb_pack(const ProtobufCMessage *msg, uint8_t *out);

/* The unpack allocation budget for a section of len bytes: 4 * len + 16 KiB.
 * A packed message expands when unpacked (a 2-byte empty sub-message becomes
 * a struct of tens of bytes), so the budget is a multiple; the floor covers
 * the top-level struct of a small or empty section. */
size_t fy_pb_alloc_limit(size_t len);

/*
 * Unpacks len bytes as a message of type desc, allocating at most alloc_max
 * bytes in total (counted as requested from malloc); a section that needs
 * more fails like a malformed one. Returns 0 and *out, to be freed with
 * fy_pb_free(), or -FY_EDECODE.
 */
int fy_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                 size_t alloc_max, ProtobufCMessage **out);

/* Unpacks f's header section as a desc message with the default budget
 * (fy_pb_alloc_limit(f->header_len)). An empty section yields a message with
 * every field at its default. */
int fy_frame_unpack(const fy_frame *f, const ProtobufCMessageDescriptor *desc,
                    ProtobufCMessage **out);

/* Frees a message from fy_pb_unpack / fy_frame_unpack; NULL is fine. */
void fy_pb_free(ProtobufCMessage *msg);

/*
 * One block of memory that a hot request path unpacks into again and again
 * (fy_pb_unpack_in) instead of a malloc and free per field, string and
 * repeated element: a send of 32 messages is about a hundred of those. Start
 * zeroed; fy_pb_arena_free at the end.
 */
struct fy_pb_arena {
  uint8_t *buf;
  size_t cap;  /* bytes at buf */
  size_t used; /* by the message unpacked last */
  size_t max;  /* its budget */
};
/* Blocks up to this size are kept for the next unpack; larger are freed. */
#define FY_PB_ARENA_KEEP ((size_t)4 << 20)

/* As fy_pb_unpack, with the message's memory taken from a (grown to
 * alloc_max first: -ENOMEM if that fails). The message is valid until the
 * next fy_pb_unpack_in or fy_pb_arena_reset on a, and is never passed to
 * fy_pb_free. */
int fy_pb_unpack_in(struct fy_pb_arena *a, const ProtobufCMessageDescriptor *desc,
                    const uint8_t *data, size_t len, size_t alloc_max, ProtobufCMessage **out);
/* Ends the use of the message unpacked last; frees a block above the limit. */
void fy_pb_arena_reset(struct fy_pb_arena *a);
void fy_pb_arena_free(struct fy_pb_arena *a);

#endif
