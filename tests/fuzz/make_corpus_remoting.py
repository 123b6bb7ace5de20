#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_remoting (tests/fuzz/corpus/remoting/).

Seeds are RocketMQ remoting frames as real clients send them, encoded here
by hand from the protocol (JSON headers as ali-ons and the Java client send
them, RocketMQ's binary header layout, SEND_BATCH_MESSAGE bodies), plus a
few broken ones. Rerun after changing them: python3 tests/fuzz/make_corpus_remoting.py
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "remoting")


def frame(header, body=b"", ser=0):
    return struct.pack(">II", 4 + len(header) + len(body), ser << 24 | len(header)) + header + body


def jframe(obj, body=b""):
    return frame(json.dumps(obj, separators=(",", ":")).encode(), body)


def bin_header(code, opaque, flag, ext, remark=b"", lang=0, version=401):
    e = b"".join(struct.pack(">H", len(k)) + k + struct.pack(">I", len(v)) + v
                 for k, v in ext)
    return (struct.pack(">hBhii", code, lang, version, opaque, flag)
            + struct.pack(">I", len(remark)) + remark + struct.pack(">I", len(e)) + e)


def batch_entry(body, props, flag=0):
    return (struct.pack(">IIIII", 22 + len(body) + len(props), 0, 0, flag, len(body)) + body
            + struct.pack(">H", len(props)) + props)


def stored_msg(body, topic, props, v6=False, magic=0xDAA320A7):
    """One message in RocketMQ's stored layout (what pull bodies carry)."""
    import zlib
    host = (b"\x00" * 15 + b"\x01" if v6 else b"\x7f\x00\x00\x01") + struct.pack(">I", 10911)
    sys_flag = 0x30 if v6 else 0
    tlen = struct.pack(">H" if magic == 0xDAA320AB else ">B", len(topic))
    rest = (struct.pack(">iiqqiq", 1, 0, 5, 4096, sys_flag, 1700000000000) + host
            + struct.pack(">q", 1700000000001) + host + struct.pack(">iqI", 0, 0, len(body))
            + body + tlen + topic + struct.pack(">H", len(props)) + props)
    crc = zlib.crc32(body) & 0x7FFFFFFF
    return struct.pack(">III", 12 + len(rest), magic, crc) + rest


def seeds():
    s = {}
    v2 = {"a": "PG", "b": "TopicTest", "c": "TBW102", "d": "4", "e": "2", "f": "0",
          "g": "1700000000000", "h": "0", "i": "TAGS\x01TagA\x02UNIQ_KEY\x01u1\x02", "j": "0",
          "k": "false", "l": "16", "m": "false"}
    s["send_v2_strings"] = jframe({"code": 310, "language": "NODE", "opaque": 1, "flag": 0,
                                   "version": 373, "extFields": v2}, b"hello ferry")
    s["send_v2_numbers"] = jframe({"code": "310", "opaque": "2", "flag": 0, "remark": None,
                                   "extFields": {"a": "PG", "b": "T", "d": 4, "e": 1, "g": 1.7e12,
                                                 "k": False, "m": True}}, b"x" * 40)
    batch = batch_entry(b"first", b"KEYS\x01k1\x02", 1) + batch_entry(b"", b"") + \
        batch_entry(b"third", b"TAGS\x01B\x02")
    s["send_batch"] = jframe({"code": 320, "language": "JAVA", "opaque": 3, "flag": 0,
                              "extFields": dict(v2, m="true")}, batch)
    s["pull"] = jframe({"code": 11, "language": "JAVA", "opaque": 4, "flag": 0, "version": 401,
                        "extFields": {"consumerGroup": "CG", "topic": "TopicTest", "queueId": "0",
                                      "queueOffset": "0", "maxMsgNums": "32", "sysFlag": "2",
                                      "commitOffset": "0", "suspendTimeoutMillis": "15000",
                                      "subscription": "TagA || TagB", "subVersion": "1"}})
    s["heartbeat_body"] = jframe({"code": 34, "language": "JAVA", "opaque": 5, "flag": 0},
                                 json.dumps({"clientID": "127.0.0.1@1", "consumerDataSet": [],
                                             "producerDataSet": [{"groupName": "PG"}]}).encode())
    s["route_response"] = jframe({"code": 0, "extFields": {}, "flag": 1, "language": "JAVA",
                                  "opaque": 6, "serializeTypeCurrentRPC": "JSON",
                                  "version": 401}, b'{"brokerDatas":[],"queueDatas":[]}')
    s["error_response"] = jframe({"code": 17, "flag": 1, "opaque": 7,
                                  "remark": "No topic route info in name server"})
    s["binary_request"] = frame(bin_header(105, 8, 0, [(b"topic", b"TopicTest")]), ser=1)
    s["binary_oneway"] = frame(bin_header(34, 9, 2, [(b"k", b"v"), (b"k2", b"-42")], b"hi", 9),
                               b"{}", ser=1)
    s["binary_response"] = frame(bin_header(0, 10, 1, [(b"msgId", b"0A00000100002A9F0000000000001000"),
                                                       (b"queueOffset", b"7")]), ser=1)
    s["pull_body"] = (stored_msg(b"hello", b"TopicTest", b"TAGS\x01TagA\x02")
                      + stored_msg(b"", b"T", b"", v6=True)
                      + stored_msg(b"x" * 30, b"t" * 200, b"", magic=0xDAA320AB))
    s["pull_response"] = jframe({"code": 0, "flag": 1, "opaque": 4,
                                 "extFields": {"suggestWhichBrokerId": "0", "nextBeginOffset": "3",
                                               "minOffset": "0", "maxOffset": "3"}},
                                s["pull_body"])
    s["two_frames"] = s["pull"] + s["binary_request"]
    s["batch_alone"] = batch
    s["tags"] = b"TagA || TagB || *"
    s["truncated"] = s["send_v2_strings"][:30]
    s["json_array"] = frame(b"[1,2]")
    s["missing_code"] = jframe({"opaque": 1})
    s["nested_ext"] = jframe({"code": 1, "extFields": {"a": {"b": 1}}})
    s["huge_header_len"] = struct.pack(">II", 1 << 20, 0x00FFFFFF)
    s["bad_type"] = struct.pack(">II", 8, 0x02000004) + b"{}{}"
    s["bin_truncated"] = frame(bin_header(1, 1, 0, [(b"key", b"value")])[:-3], ser=1)
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds()), OUT))


if __name__ == "__main__":
    main()
