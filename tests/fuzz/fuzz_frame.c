/*
 * libFuzzer target for what a peer controls first: the frame parser and the
 * unpack of a header section through the bounded allocator. Built only with
 * -DFERRY_FUZZ=ON under clang (scripts/fuzz.sh).
 *
 * Input: frames back to back, each checked against the parser's contract
 * (sizes add up, every strict prefix asks for more, nothing read out of
 * bounds) and its header section unpacked as the message type its op names
 * (other ops pick one from the table below, so every type is reached). The same
 * bytes minus the first are also unpacked directly as the type the first
 * byte picks, so protobuf coverage does not wait for the framing to be
 * learned. A successful unpack is packed again and must round-trip.
 */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "ferry.pb-c.h"
#include "net/frame.h"

#define PAYLOAD_MAX (1u << 20)
#define FRAMES_MAX 64

static const ProtobufCMessageDescriptor *const types[] = {
    /* requests: what a server unpacks from any client */
    &ferry__v1__register_broker_request__descriptor,
    &ferry__v1__unregister_broker_request__descriptor,
    &ferry__v1__get_route_request__descriptor,
    &ferry__v1__get_cluster_info_request__descriptor,
    &ferry__v1__get_topic_list_request__descriptor,
    &ferry__v1__send_request__descriptor,
    &ferry__v1__pull_request__descriptor,
    &ferry__v1__query_by_id_request__descriptor,
    &ferry__v1__query_by_key_request__descriptor,
    &ferry__v1__heartbeat_request__descriptor,
    &ferry__v1__unregister_client_request__descriptor,
    &ferry__v1__get_consumer_list_request__descriptor,
    &ferry__v1__queue_offset_request__descriptor,
    &ferry__v1__consumer_progress_request__descriptor,
    &ferry__v1__reset_offset_request__descriptor,
    &ferry__v1__update_topic_request__descriptor,
    &ferry__v1__delete_topic_request__descriptor,
    &ferry__v1__broker_status_request__descriptor,
    &ferry__v1__log_digest_request__descriptor,
    /* responses: what a client unpacks from a broker or name server */
    &ferry__v1__error_response__descriptor,
    &ferry__v1__register_broker_response__descriptor,
    &ferry__v1__topic_route__descriptor,
    &ferry__v1__cluster_info__descriptor,
    &ferry__v1__topic_list__descriptor,
    &ferry__v1__send_response__descriptor,
    &ferry__v1__pull_response__descriptor,
    &ferry__v1__query_response__descriptor,
    &ferry__v1__consumer_list__descriptor,
    &ferry__v1__queue_offset_response__descriptor,
    &ferry__v1__consumer_progress__descriptor,
    &ferry__v1__topic_configs__descriptor,
    &ferry__v1__broker_status__descriptor,
    &ferry__v1__log_digest__descriptor,
};
#define NTYPES (sizeof types / sizeof types[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The header type a frame's op names (proto/ferry.proto); ops with no type
 * of their own map through the table so every type stays reachable. */
static const ProtobufCMessageDescriptor *frame_type(const fy_frame *f) {
  if (f->kind == FY_FRAME_RESPONSE) {
    if (f->status != 0)
      return &ferry__v1__error_response__descriptor;
    switch (f->op) {
    case 1: return &ferry__v1__register_broker_response__descriptor;
    case 3: return &ferry__v1__topic_route__descriptor;
    case 4: return &ferry__v1__cluster_info__descriptor;
    case 5: return &ferry__v1__topic_list__descriptor;
    case 10: return &ferry__v1__send_response__descriptor;
    case 11: return &ferry__v1__pull_response__descriptor;
    case 12: case 13: return &ferry__v1__query_response__descriptor;
    case 22: return &ferry__v1__consumer_list__descriptor;
    case 23: case 24: case 25: case 26: case 27:
      return &ferry__v1__queue_offset_response__descriptor;
    case 28: return &ferry__v1__consumer_progress__descriptor;
    case 42: return &ferry__v1__topic_configs__descriptor;
    case 43: return &ferry__v1__broker_status__descriptor;
    case 45: return &ferry__v1__log_digest__descriptor;
    }
  } else {
    switch (f->op) {
    case 1: return &ferry__v1__register_broker_request__descriptor;
    case 2: return &ferry__v1__unregister_broker_request__descriptor;
    case 3: return &ferry__v1__get_route_request__descriptor;
    case 4: return &ferry__v1__get_cluster_info_request__descriptor;
    case 5: return &ferry__v1__get_topic_list_request__descriptor;
    case 10: return &ferry__v1__send_request__descriptor;
    case 11: return &ferry__v1__pull_request__descriptor;
    case 12: return &ferry__v1__query_by_id_request__descriptor;
    case 13: return &ferry__v1__query_by_key_request__descriptor;
    case 20: return &ferry__v1__heartbeat_request__descriptor;
    case 21: return &ferry__v1__unregister_client_request__descriptor;
    case 22: return &ferry__v1__get_consumer_list_request__descriptor;
    case 23: case 24: case 25: case 26: case 27:
      return &ferry__v1__queue_offset_request__descriptor;
    case 28: return &ferry__v1__consumer_progress_request__descriptor;
    case 29: return &ferry__v1__reset_offset_request__descriptor;
    case 40: return &ferry__v1__update_topic_request__descriptor;
    case 41: return &ferry__v1__delete_topic_request__descriptor;
    case 43: return &ferry__v1__broker_status_request__descriptor;
    case 45: return &ferry__v1__log_digest_request__descriptor;
    }
  }
  return types[f->op % NTYPES];
}

static void unpack_check(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len) {
  ProtobufCMessage *m = NULL;
  int err = fy_pb_unpack(desc, p, len, fy_pb_alloc_limit(len), &m);
  if (err) {
    fy_assert(err == -FY_EDECODE);
    fy_assert(m == NULL);
    return;
  }
  fy_assert(m != NULL);
  fy_assert(m->descriptor == desc);
  /* Packing what was unpacked is canonical: once more gives the same.
   * protobuf-c keeps unknown fields as they came, and takes a field number
   * 0 in a non-minimal varint (80 00) that it refuses once packed minimal
   * (00), so a repacked message may fail to unpack; when it does unpack, it
   * must repack to the same bytes. */
  size_t n1 = fy_pb_packed_size(m);
  uint8_t *b1 = malloc(n1 ? n1 : 1);
  fy_assert(fy_pb_pack(m, b1) == n1);
  fy_pb_free(m);
  ProtobufCMessage *m2 = NULL;
  if (fy_pb_unpack(desc, b1, n1, SIZE_MAX, &m2) != 0) {
    free(b1);
    return;
  }
  size_t n2 = fy_pb_packed_size(m2);
  fy_assert(n2 == n1);
  uint8_t *b2 = malloc(n2 ? n2 : 1);
  fy_assert(fy_pb_pack(m2, b2) == n2);
  fy_assert(memcmp(b1, b2, n1) == 0);
  fy_pb_free(m2);
  free(b1);
  free(b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int quiet;
  if (!quiet) {
    fy_log_set_level(FY_LOG_ERROR);
    quiet = 1;
  }
  size_t off = 0;
  for (int i = 0; i < FRAMES_MAX && off < size; i++) {
    const uint8_t *p = data + off;
    size_t avail = size - off;
    fy_frame f;
    size_t need = 0;
    ssize_t n = fy_frame_parse(p, avail, PAYLOAD_MAX, &f, &need);
    if (n == 0) {
      fy_assert(need > avail);
      fy_assert(need >= FY_FRAME_HEADER_LEN);
      fy_assert(need <= FY_FRAME_HEADER_LEN + (size_t)PAYLOAD_MAX);
      break;
    }
    if (n < 0) {
      fy_assert(n == -FY_EFRAME_MAGIC || n == -FY_EFRAME_VERSION || n == -FY_EFRAME_KIND ||
                n == -FY_EFRAME_TOO_BIG || n == -FY_EFRAME_HEADER);
      break;
    }
    fy_assert((size_t)n <= avail);
    fy_assert((size_t)n == FY_FRAME_HEADER_LEN + (size_t)f.payload_len);
    fy_assert(f.payload_len <= PAYLOAD_MAX);
    fy_assert(f.header == p + FY_FRAME_HEADER_LEN);
    fy_assert(f.header_len + f.raw_len == f.payload_len);
    fy_assert(f.raw == f.header + f.header_len);
    fy_assert(f.kind <= FY_FRAME_ONEWAY);
    /* Incremental: strict prefixes ask for more (a few, to stay fast). */
    size_t cuts[] = {0, 1, 7, 8, FY_FRAME_HEADER_LEN - 1, FY_FRAME_HEADER_LEN, (size_t)n - 1};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
      if (cuts[c] >= (size_t)n)
        continue;
      fy_frame g;
      fy_assert(fy_frame_parse(p, cuts[c], PAYLOAD_MAX, &g, NULL) == 0);
    }
    /* Re-encoding the header gives the same 24 bytes. */
    uint8_t h[FY_FRAME_HEADER_LEN];
    fy_frame_encode_header(h, (enum fy_frame_kind)f.kind, f.payload_len, f.request_id, f.op,
                           f.status, f.header_len);
    fy_assert(memcmp(h, p, FY_FRAME_HEADER_LEN) == 0);
    unpack_check(frame_type(&f), f.header, f.header_len);
    off += (size_t)n;
  }
  if (size > 0)
    unpack_check(types[data[0] % NTYPES], data + 1, size - 1);
  return 0;
}
