#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_frame (tests/fuzz/corpus/frame/).

Seeds are real-looking frames for the main ops, encoded here by hand
(protobuf wire format, proto/ferry.proto field numbers) so the script needs
nothing beyond Python, plus a few broken ones. Rerun after changing the
protocol: python3 tests/fuzz/make_corpus.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "frame")

REQUEST, RESPONSE, ONEWAY = 0, 1, 2


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(field, n):
    return varint(field << 3 | 0) + varint(n)


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def frame(kind, req_id, op, status, header=b"", raw=b"", version=1, magic=b"FY"):
    payload = len(header) + len(raw)
    return (magic + struct.pack(">BBIQHHI", version, kind, payload, req_id, op, status,
                                len(header)) + header + raw)


def kv(k, v):
    return f_bytes(1, k) + f_bytes(2, v)


def send_message(body_len, tags, keys, uniq):
    return (f_varint(1, body_len) + f_bytes(2, tags) + f_bytes(3, keys)
            + f_bytes(4, kv("KEYS", keys)) + f_varint(7, 1700000000000)
            + f_bytes(9, uniq))


def seeds():
    s = {}
    s["get_route"] = frame(REQUEST, 1, 3, 0, f_bytes(1, "TopicTest"))
    bodies = [b"hello ferry", b"x" * 200]
    send = (f_bytes(1, "pg") + f_bytes(2, "TopicTest") + f_varint(3, -1)
            + b"".join(f_bytes(4, send_message(len(b), "TagA", "k%d" % i, "7F00000100%02d" % i))
                       for i, b in enumerate(bodies))
            + f_varint(5, 4))
    s["send_batch"] = frame(REQUEST, 2, 10, 0, send, b"".join(bodies))
    tag_hashes = b"".join(varint(h) for h in (2598919, -5, 0))
    pull = (f_bytes(1, "cg") + f_bytes(2, "TopicTest") + f_varint(3, 1) + f_varint(4, 42)
            + f_varint(5, 32) + f_varint(6, 1 << 20) + f_varint(7, 15000)
            + f_bytes(8, tag_hashes) + f_bytes(9, "TagA || TagB") + f_varint(10, 1)
            + f_varint(11, 40))
    s["pull"] = frame(REQUEST, 3, 11, 0, pull)
    consumer = (f_bytes(1, "cg") + f_varint(2, 0) + f_bytes(3, "last")
                + f_bytes(4, f_bytes(1, "TopicTest") + f_bytes(2, "*")))
    hb = f_bytes(1, "10.0.0.1@1234") + f_bytes(2, consumer) + f_bytes(3, "pg")
    s["heartbeat_oneway"] = frame(ONEWAY, 0, 20, 0, hb)
    topic = (f_bytes(1, "TopicTest") + f_varint(2, 4) + f_varint(3, 4) + f_varint(4, 6)
             + f_varint(5, 0))
    reg = (f_bytes(1, "DefaultCluster") + f_bytes(2, "broker-a") + f_bytes(3, "127.0.0.1:10911")
           + f_varint(4, 0) + f_bytes(5, "127.0.0.1:10912") + f_bytes(6, topic) + f_varint(7, 9))
    s["register_broker"] = frame(REQUEST, 4, 1, 0, reg)
    s["query_offset"] = frame(REQUEST, 5, 23, 0, f_bytes(1, "cg") + f_bytes(2, "T")
                              + f_varint(3, 0) + f_varint(4, 100) + f_varint(5, 1700000000000))
    s["update_topic"] = frame(REQUEST, 6, 40, 0, f_bytes(1, topic))
    s["log_digest"] = frame(REQUEST, 7, 45, 0, f_varint(1, 0) + f_varint(2, 4096))
    route = (f_bytes(1, f_bytes(1, "broker-a") + f_varint(2, 4) + f_varint(3, 4) + f_varint(4, 6))
             + f_bytes(2, f_bytes(1, "DefaultCluster") + f_bytes(2, "broker-a")
                       + f_bytes(3, f_varint(1, 0) + f_bytes(2, "127.0.0.1:10911"))))
    s["route_response"] = frame(RESPONSE, 1, 3, 0, route)
    send_resp = f_bytes(1, "broker-a") + f_varint(2, 1) + f_bytes(
        3, f_bytes(1, "7F0000010000") + f_bytes(2, "7F00000100002A9F0000000000001000")
        + f_varint(3, 7))
    s["send_response"] = frame(RESPONSE, 2, 10, 0, send_resp)
    s["pull_response_raw"] = frame(RESPONSE, 3, 11, 0,
                                   f_varint(1, 44) + f_varint(3, 44) + f_varint(5, 2),
                                   bytes(range(256)))
    s["error_response"] = frame(RESPONSE, 9, 3, 5, f_bytes(1, "topic not exist: T"))
    s["two_frames"] = s["get_route"] + s["log_digest"]
    s["empty_oneway"] = frame(ONEWAY, 0, 20, 0)
    s["truncated"] = s["send_batch"][:40]
    s["bad_magic"] = frame(REQUEST, 1, 3, 0, b"", magic=b"FX")
    s["bad_version"] = frame(REQUEST, 1, 3, 0, b"", version=2)
    s["oversize"] = (b"FY" + struct.pack(">BBIQHHI", 1, 0, 0xFFFFFFF0, 1, 3, 0, 0))
    s["header_too_long"] = (b"FY" + struct.pack(">BBIQHHI", 1, 0, 4, 1, 3, 0, 9)) + b"abcd"
    # Raw protobuf, for the direct unpack path (first byte picks the type).
    s["raw_send_request"] = bytes([5]) + send
    s["raw_heartbeat"] = bytes([9]) + hb
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds()), OUT))


if __name__ == "__main__":
    main()
