"""RocketMQ remoting at the frame level (issue: RocketMQ protocol, acceptance 2 and 3).

Raw sockets to a real mqnamesrv and a SYNC_MASTER/SLAVE pair (all on port 0,
started as in test_rocketmq_clients.py). Requests are built as the Java
client and ali-ons send them (JSON header with the 8-byte prefix, or
RocketMQ's binary header); responses are parsed and the fields clients read
are checked: code, opaque echoed, the response flag bit, the header
encoding, remarks, ext fields and bodies (route JSON, stored messages
decoded from the layout in docs/ROCKETMQ_COMPAT.md: magic, body CRC, topic,
properties, offsets, store host, msgId = hex(storeIP, port, offset)).
Deterministic answers (unsupported codes, a missing KV item) are compared
byte for byte.

Every code the broker's handle() and the name server's serve is sent at
least once in each header encoding; bad input on both ports either gets an
error response (the connection stays usable) or a closed connection, and
the process keeps answering new connections.
"""
import itertools
import json
import os
import re
import socket
import struct
import time
import zlib

from harness import main, wait_for
from test_rocketmq_clients import Pair

JSON, BINARY = 0, 1
RESPONSE, ONEWAY = 1, 2
TOPIC = "WireTopic"
SLOW = "WireSlow"
_opaque = itertools.count(1000)

# ------------------------------------------------------------------ frames


def frame(header, body=b"", stype=JSON):
    """[u32 total = 4 + header + body][u32 type << 24 | header len][header][body]."""
    return struct.pack(">II", 4 + len(header) + len(body), stype << 24 | len(header)) + header + body


def java_header(code, opaque, ext=None, flag=0):
    """A JSON header as the Java client's fastjson writes it (RemotingCommand)."""
    return json.dumps({"code": code, "extFields": ext or {}, "flag": flag, "language": "JAVA",
                       "opaque": opaque, "serializeTypeCurrentRPC": "JSON", "version": 401},
                      separators=(",", ":")).encode()


def bin_header(code, opaque, ext=None, flag=0, remark=None, version=401):
    """RocketMQ's binary header (RocketMQSerializable), language JAVA."""
    out = struct.pack(">hBhii", code, 0, version, opaque, flag)
    r = remark.encode() if remark is not None else b""
    out += struct.pack(">i", len(r)) + r
    e = b""
    for k, v in (ext or {}).items():
        e += struct.pack(">h", len(k)) + k.encode() + struct.pack(">i", len(v.encode())) + v.encode()
    return out + struct.pack(">i", len(e)) + e


def test_helpers_match_literal_bytes(args):
    """The helpers below are checked once against hand-written bytes."""
    assert frame(b'{"code":34}') == b"\x00\x00\x00\x0f\x00\x00\x00\x0b" + b'{"code":34}'
    assert frame(b"xy", b"body", BINARY) == b"\x00\x00\x00\x0a\x01\x00\x00\x02xybody"
    assert java_header(30, 7, {"topic": "T", "queueId": "0"}) == (
        b'{"code":30,"extFields":{"topic":"T","queueId":"0"},"flag":0,"language":"JAVA",'
        b'"opaque":7,"serializeTypeCurrentRPC":"JSON","version":401}')
    assert java_header(10, 1, {"properties": "TAGS\x01A\x02"}) == (
        b'{"code":10,"extFields":{"properties":"TAGS\\u0001A\\u0002"},"flag":0,'
        b'"language":"JAVA","opaque":1,"serializeTypeCurrentRPC":"JSON","version":401}')
    assert bin_header(34, 1, {"a": "b"}) == (
        b"\x00\x22" b"\x00" b"\x01\x91" b"\x00\x00\x00\x01" b"\x00\x00\x00\x00"
        b"\x00\x00\x00\x00" b"\x00\x00\x00\x08" b"\x00\x01a\x00\x00\x00\x01b")
    assert decode_msgs(GOLDEN_MSG)[0]["topic"] == "T"


class Resp:
    """A parsed command (a response, or a request the broker sends)."""

    def __init__(self, raw):
        self.raw = raw
        total, word = struct.unpack_from(">II", raw)
        assert total == len(raw) - 4, (total, len(raw))
        self.stype, hlen = word >> 24, word & 0xFFFFFF
        h = raw[8:8 + hlen]
        self.body = raw[8 + hlen:]
        if self.stype == JSON:
            self.header = json.loads(h)
            self.code, self.opaque, self.flag = (self.header["code"], self.header["opaque"],
                                                 self.header["flag"])
            self.remark = self.header.get("remark")
            self.ext = self.header.get("extFields", {})
            assert self.header["serializeTypeCurrentRPC"] == "JSON", self.header
            assert self.header["language"] == "JAVA" and self.header["version"] == 401, self.header
        else:
            assert self.stype == BINARY, self.stype
            self.code, lang, version, self.opaque, self.flag, rlen = struct.unpack_from(
                ">hBhiii", h)
            assert lang == 0 and version == 401, (lang, version)
            p = 17
            self.remark = h[p:p + rlen].decode() if rlen else None
            p += rlen
            (elen,) = struct.unpack_from(">i", h, p)
            p += 4
            assert p + elen == len(h), (p, elen, len(h))
            self.ext = {}
            while p < len(h):
                (klen,) = struct.unpack_from(">h", h, p)
                k = h[p + 2:p + 2 + klen].decode()
                p += 2 + klen
                (vlen,) = struct.unpack_from(">i", h, p)
                self.ext[k] = h[p + 4:p + 4 + vlen].decode()
                p += 4 + vlen

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<code {self.code} remark {self.remark!r} ext {self.ext} body {self.body[:200]!r}>"


class Conn:
    def __init__(self, addr, timeout_s=20):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.notices = []  # requests the broker sent us (NOTIFY_CONSUMER_IDS_CHANGED)

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            assert chunk, f"connection closed after {len(out)} of {n} bytes"
            out += chunk
        return out

    def read_raw(self):
        head = self._exact(4)
        return head + self._exact(struct.unpack(">I", head)[0])

    def read(self):
        """The next response; requests from the peer are kept in notices."""
        while True:
            r = Resp(self.read_raw())
            if r.flag & RESPONSE:
                return r
            self.notices.append(r)

    def request(self, code, ext=None, body=b"", stype=JSON, flag=0, opaque=None):
        """Sends a request; returns its opaque."""
        opaque = next(_opaque) if opaque is None else opaque
        h = (java_header if stype == JSON else bin_header)(code, opaque, ext, flag)
        self.send(frame(h, body, stype))
        return opaque

    def call(self, code, ext=None, body=b"", stype=JSON, want=0, remark=None):
        """A request and its answer, checked: code want, opaque echoed, response flag,
        same header encoding, and the remark (a regex) when given."""
        opaque = self.request(code, ext, body, stype)
        r = self.read()
        check(r, opaque, want, stype, remark)
        return r

    def closed_by_peer(self):
        """True once the peer closes (EOF or reset); fails if it answers instead."""
        try:
            data = self.s.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            return True
        assert not data, f"answered instead of closing: {data[:200]!r}"
        return True


def check(r, opaque, want, stype=JSON, remark=None):
    """want None: any code."""
    assert r.opaque == opaque, f"opaque {r.opaque}, sent {opaque}: {r}"
    assert r.flag & RESPONSE, r
    assert r.stype == stype, r
    assert want is None or r.code == want, f"code {r.code}, want {want}: {r}"
    if remark is not None:
        assert r.remark is not None and re.search(remark, r.remark), f"remark {r.remark!r}"


# ------------------------------------------------------------------ stored messages

# One message in the 4.x stored layout, by hand: queue 1, queue offset 2,
# physical offset 3, store host 127.0.0.1:10911, body "hi", topic "T",
# properties TAGS=A.
GOLDEN_MSG = (b"\x00\x00\x00\x65" b"\xda\xa3\x20\xa7" + struct.pack(">i", zlib.crc32(b"hi") & 0x7FFFFFFF)
              + b"\x00\x00\x00\x01" b"\x00\x00\x00\x00" + struct.pack(">qqi", 2, 3, 0)
              + struct.pack(">q", 5) + b"\x7f\x00\x00\x01\x00\x00\x04\xd2" + struct.pack(">q", 6)
              + b"\x7f\x00\x00\x01\x00\x00\x2a\x9f" + struct.pack(">iq", 0, 0)
              + b"\x00\x00\x00\x02hi" b"\x01T" b"\x00\x07TAGS\x01A\x02")


def host_of(b):
    ip = b[:-4]
    return socket.inet_ntop(socket.AF_INET if len(ip) == 4 else socket.AF_INET6, ip), \
        struct.unpack(">I", b[-4:])[0]


def decode_msgs(body):
    """RocketMQ 4.x stored messages back to back (docs/ROCKETMQ_COMPAT.md)."""
    out, p = [], 0
    while p < len(body):
        total, magic, crc, qid, flag, qoff, phys, sysflag, born_ts = struct.unpack_from(
            ">iIiiiqqiq", body, p)
        assert magic == 0xDAA320A7, hex(magic)
        q = p + 48
        bl = 20 if sysflag & 0x10 else 8
        born = host_of(body[q:q + bl])
        q += bl
        (store_ts,) = struct.unpack_from(">q", body, q)
        q += 8
        sl = 20 if sysflag & 0x20 else 8
        store = host_of(body[q:q + sl])
        q += sl
        reconsume, prepared, blen = struct.unpack_from(">iqi", body, q)
        q += 16
        mbody = body[q:q + blen]
        q += blen
        assert crc == zlib.crc32(mbody) & 0x7FFFFFFF, "body CRC"
        tlen = body[q]
        topic = body[q + 1:q + 1 + tlen].decode()
        q += 1 + tlen
        (plen,) = struct.unpack_from(">h", body, q)
        props = body[q + 2:q + 2 + plen].decode()
        q += 2 + plen
        assert q - p == total, f"TOTALSIZE {total}, fields add up to {q - p}"
        out.append({"queueId": qid, "flag": flag, "queueOffset": qoff, "phys": phys,
                    "sysFlag": sysflag, "bornTs": born_ts, "born": born, "storeTs": store_ts,
                    "store": store, "reconsumeTimes": reconsume, "prepared": prepared,
                    "body": mbody, "topic": topic,
                    "props": dict(kv.split("\x01", 1) for kv in props.split("\x02") if kv)})
        p = q
    return out


def offset_msg_id(m):
    ip, port = m["store"]
    return (socket.inet_aton(ip).hex() + "%08x%016x" % (port, m["phys"])).upper()


def props(**kv):
    return "".join(f"{k}\x01{v}\x02" for k, v in kv.items())


# ------------------------------------------------------------------ the cluster

_pair = []


def pair(args):
    if not _pair:
        p = Pair(args, "rmq-wire")
        _pair.append(p)
        create_topic(p, TOPIC, 4)
        create_topic(p, SLOW, 1)
        create_topic(p, "WireProbe", 1)
        c = Conn(p.m_addr)

        def slave_acks():  # SLAVE_NOT_AVAILABLE (11) until the slave's HA link is up
            return send_v2(c, "WireProbe", 0, b"probe", "T", "k", want=None)[0].code == 0
        wait_for(slave_acks, 30, "a send to be SEND_OK (the slave attached)", interval_s=0.1)
        c.close()
    return _pair[0]


def create_topic(p, topic, queues):
    c = Conn(p.m_addr)
    c.call(17, {"topic": topic, "defaultTopic": "TBW102", "readQueueNums": str(queues),
                "writeQueueNums": str(queues), "perm": "6", "topicFilterType": "SINGLE_TAG",
                "topicSysFlag": "0", "order": "false"})
    c.close()

    def routed_with_slave():
        n = Conn(p.ns)
        n.request(105, {"topic": topic})
        r = n.read()
        n.close()
        return r.code == 0 and set(r.json()["brokerDatas"][0]["brokerAddrs"]) == {"0", "1"}
    wait_for(routed_with_slave, 30, f"the route of {topic} to list master and slave")


def alive(p, proc, addr, ns):
    assert proc.p.poll() is None, f"process exited:\n{proc.stderr_text()[-3000:]}"
    c = Conn(addr)
    if ns:
        assert TOPIC in c.call(206).json()["topicList"]
    else:
        c.call(30, {"topic": TOPIC, "queueId": "0"})
    c.close()


def send_v2(c, topic, qid, body, tags, keys, extra_props="", stype=JSON, want=0):
    uniq = "7F0000010000%020X" % next(_opaque)
    ext = {"a": "WireProducer", "b": topic, "c": "TBW102", "d": "4", "e": str(qid), "f": "0",
           "g": str(int(time.time() * 1000)), "h": "0",
           "i": props(TAGS=tags, KEYS=keys, UNIQ_KEY=uniq, WAIT="true") + extra_props,
           "j": "0", "k": "false", "m": "false"}
    return c.call(310, ext, body, stype, want), uniq


def pull(c, topic, qid, offset, group="WireGroup", n=32, sys_flag=0, stype=JSON, want=0, **more):
    ext = {"consumerGroup": group, "topic": topic, "queueId": str(qid), "queueOffset": str(offset),
           "maxMsgNums": str(n), "sysFlag": str(sys_flag), "commitOffset": "0",
           "suspendTimeoutMillis": "0", "subVersion": "0"}
    ext.update(more)
    r = c.call(11, ext, stype=stype, want=want)
    if want not in (0, 19, 20, 21):  # errors carry no offsets, as in RocketMQ
        return r
    for k in ("nextBeginOffset", "minOffset", "maxOffset", "suggestWhichBrokerId"):
        assert re.fullmatch(r"\d+", r.ext.get(k, "")), f"pull reply without {k}: {r}"
    return r


def max_offset(c, topic, qid):
    return int(c.call(30, {"topic": topic, "queueId": str(qid)}).ext["offset"])


# ------------------------------------------------------------------ tests


def test_unsupported_codes_exact_bytes(args):
    p = pair(args)
    for addr, code in ((p.m_addr, 26), (p.ns, 103), (p.s_addr, 9999)):
        c = Conn(addr)
        c.send(frame(java_header(code, 77)))
        want = (b'{"code":3,"extFields":{},"flag":1,"language":"JAVA","opaque":77,'
                b'"remark":" request type %d not supported","serializeTypeCurrentRPC":"JSON",'
                b'"version":401}' % code)
        assert c.read_raw() == frame(want), addr
        c.send(frame(bin_header(code, 78), stype=BINARY))
        assert c.read_raw() == frame(bin_header(3, 78, flag=RESPONSE,
                                                remark=" request type %d not supported" % code),
                                     stype=BINARY)
        # The connection stays usable.
        if addr == p.ns:
            c.call(206)
        else:
            c.call(30, {"topic": TOPIC, "queueId": "0"})
        c.close()
    # GET_KV_CONFIG: no KV store; the answer is fixed.
    c = Conn(p.ns)
    c.send(frame(java_header(101, 5, {"namespace": "ORDER_TOPIC_CONFIG", "key": TOPIC})))
    assert c.read_raw() == frame(
        b'{"code":22,"extFields":{},"flag":1,"language":"JAVA","opaque":5,'
        b'"remark":"No config item, Namespace: ORDER_TOPIC_CONFIG Key: WireTopic",'
        b'"serializeTypeCurrentRPC":"JSON","version":401}')
    c.call(101, {"namespace": "ORDER_TOPIC_CONFIG", "key": TOPIC}, stype=BINARY, want=22,
           remark="^No config item")


def test_name_server(args):
    p = pair(args)
    c = Conn(p.ns)
    for stype in (JSON, BINARY):
        route = c.call(105, {"topic": TOPIC}, stype=stype).json()
        assert route["brokerDatas"] == [{"brokerAddrs": {"0": p.m_addr, "1": p.s_addr},
                                         "brokerName": "broker-a", "cluster": "DefaultCluster"}]
        assert route["queueDatas"] == [{"brokerName": "broker-a", "perm": 6, "readQueueNums": 4,
                                        "topicSynFlag": 0, "writeQueueNums": 4}], route
        assert route["filterServerTable"] == {}
        c.call(105, {"topic": "NoSuchTopic"}, stype=stype, want=17,
               remark="^No topic route info in name server for the topic: NoSuchTopic$")
        info = c.call(106, stype=stype).json()
        assert info["brokerAddrTable"]["broker-a"]["brokerAddrs"] == {"0": p.m_addr,
                                                                      "1": p.s_addr}
        assert info["clusterAddrTable"] == {"DefaultCluster": ["broker-a"]}, info
        topics = c.call(206, stype=stype).json()["topicList"]
        assert TOPIC in topics and SLOW in topics, topics
    c.call(105, {}, want=1, remark="<topic> is null")  # missing field: error, stays open
    c.call(206)
    c.close()


def routed(p, topic):
    n = Conn(p.ns)
    n.request(105, {"topic": topic})
    code = n.read().code
    n.close()
    return code == 0


def test_delete_topic(args):
    """DELETE_TOPIC_IN_BROKER (215) and DELETE_TOPIC_IN_NAMESRV (216), as RocketMQ's
    mqadmin deleteTopic sends them: masters first, then name servers."""
    p = pair(args)
    topic, group = "WireDelete", "WireDeleteGroup"
    create_topic(p, topic, 2)
    c = Conn(p.m_addr)
    send_v2(c, topic, 0, b"doomed", "T", "k")
    c.call(15, {"consumerGroup": group, "topic": topic, "queueId": "0", "commitOffset": "1"})
    assert c.call(14, {"consumerGroup": group, "topic": topic, "queueId": "0"}).ext["offset"] == "1"
    s = Conn(p.s_addr)
    s.call(215, {"topic": topic}, want=1, remark="slave")
    c.call(215, {}, want=1, remark="<topic> is null")
    for stype in (JSON, BINARY):  # the second time the topic is unknown: still SUCCESS
        c.call(215, {"topic": topic}, stype=stype)
    # Gone from the broker: its offsets, its messages, its route (the broker re-registers).
    # No offset left: RocketMQ's answer for a group that never committed is 0.
    assert c.call(14, {"consumerGroup": group, "topic": topic, "queueId": "0"}).ext == {"offset": "0"}
    send_v2(c, topic, 0, b"late", "T", "k", want=17)
    wait_for(lambda: not routed(p, topic), 10, f"the route of {topic} to go")
    # Name server only: one cluster's queues, or all; the master's next registration
    # brings back a topic it still has, as in RocketMQ.
    other = "WireNsDelete"
    create_topic(p, other, 1)
    n = Conn(p.ns)
    n.call(216, {"topic": other, "clusterName": "NoSuchCluster"})
    n.call(216, {}, want=1, remark="<topic> is null")
    n.call(216, {"topic": other, "clusterName": "DefaultCluster"}, stype=BINARY)
    n.call(216, {"topic": "NeverWas"})
    # The master re-registers every second, so the route's absence is read from the log.
    log = p.ns_proc.stderr_text()
    for line in (f"deleted topic {other} in cluster NoSuchCluster from the routes (0 brokerNames)",
                 f"deleted topic {other} in cluster DefaultCluster from the routes (1 brokerName)",
                 "deleted topic NeverWas from the routes (0 brokerNames)"):
        assert line in log, log[-2000:]
    wait_for(lambda: routed(p, other), 30, f"the master's registration to bring {other} back")
    for conn in (c, s, n):
        conn.close()


def check_send(r, qid):
    assert r.ext["queueId"] == str(qid), r
    assert re.fullmatch(r"\d+", r.ext["queueOffset"]), r
    assert re.fullmatch(r"[0-9A-F]{32}(,[0-9A-F]{32})*", r.ext["msgId"]), r
    assert r.ext["MSG_REGION"] == "DefaultRegion" and r.ext["TRACE_ON"] == "false", r
    return r.ext["msgId"].split(",")


def batch_entry(body, prop, flag=0):
    pb = prop.encode()
    return struct.pack(">iiiii", 22 + len(body) + len(pb), 0, 0, flag, len(body)) + body + \
        struct.pack(">h", len(pb)) + pb


def test_send_pull_view_query(args):
    p = pair(args)
    c = Conn(p.m_addr)
    q = 0
    start = max_offset(c, TOPIC, q)
    t0 = int(time.time() * 1000)
    # SEND_MESSAGE (10): long field names, as the Java client's non-V2 path.
    r = c.call(10, {"producerGroup": "WireProducer", "topic": TOPIC, "defaultTopic": "TBW102",
                    "defaultTopicQueueNums": "4", "queueId": str(q), "sysFlag": "0",
                    "bornTimestamp": str(t0), "flag": "7",
                    "properties": props(TAGS="TagA", KEYS="k-10", UNIQ_KEY="U" * 32),
                    "reconsumeTimes": "0", "unitMode": "false", "batch": "false"}, b"body-10")
    ids = check_send(r, q)
    assert r.ext["queueOffset"] == str(start)
    # SEND_MESSAGE_V2 (310): short names a..m.
    r, uniq_v2 = send_v2(c, TOPIC, q, b"body-310", "TagB", "k-310")
    ids += check_send(r, q)
    assert r.ext["queueOffset"] == str(start + 1)
    # SEND_BATCH_MESSAGE (320): three entries in the body.
    body = b"".join(batch_entry(b"batch-%d" % i, props(TAGS=t, KEYS=f"kb-{i}"), flag=i)
                    for i, t in enumerate(("TagA", "TagB", "TagC")))
    r = c.call(320, {"a": "WireProducer", "b": TOPIC, "c": "TBW102", "d": "4", "e": str(q),
                     "f": "0", "g": str(t0), "h": "0", "i": "", "j": "0", "k": "false",
                     "m": "true"}, body)
    batch_ids = check_send(r, q)
    assert len(batch_ids) == 3 and r.ext["queueOffset"] == str(start + 2), r
    ids += batch_ids
    send_v2(c, "NoSuchTopic", 0, b"x", "TagA", "k", want=17)  # autoCreateTopicEnable=false
    send_v2(c, TOPIC, 4, b"x", "TagA", "k", want=1)  # queue 4 of 4: RocketMQ's SYSTEM_ERROR too
    # PULL_MESSAGE (11), found: every field of the stored layout.
    r = pull(c, TOPIC, q, start, n=32)
    msgs = decode_msgs(r.body)
    assert [m["body"] for m in msgs] == [b"body-10", b"body-310", b"batch-0", b"batch-1",
                                         b"batch-2"], msgs
    assert r.ext["nextBeginOffset"] == str(start + 5) and r.ext["maxOffset"] == str(start + 5)
    assert r.ext["minOffset"] == "0" and r.ext["suggestWhichBrokerId"] == "0", r
    m_ip, m_port = p.m_addr.rsplit(":", 1)
    local_port = c.s.getsockname()[1]
    for i, m in enumerate(msgs):
        assert m["topic"] == TOPIC and m["queueId"] == q and m["queueOffset"] == start + i, m
        assert m["store"] == (m_ip, int(m_port)), m["store"]
        assert m["born"] == ("127.0.0.1", local_port), m["born"]
        assert offset_msg_id(m) == ids[i], (offset_msg_id(m), ids[i])
        assert t0 - 1000 <= m["storeTs"] <= int(time.time() * 1000) + 1000, m["storeTs"]
        assert m["reconsumeTimes"] == 0 and m["prepared"] == 0 and m["sysFlag"] == 0, m
        assert re.fullmatch(r"[0-9A-Za-z]{32}", m["props"]["UNIQ_KEY"]), m["props"]
    assert msgs[0]["bornTs"] == t0 and msgs[0]["flag"] == 7
    assert msgs[0]["props"] == {"TAGS": "TagA", "KEYS": "k-10", "UNIQ_KEY": "U" * 32}
    assert msgs[1]["props"]["UNIQ_KEY"] == uniq_v2 and msgs[1]["props"]["WAIT"] == "true"
    assert [(m["props"]["TAGS"], m["props"]["KEYS"], m["flag"]) for m in msgs[2:]] == [
        ("TagA", "kb-0", 0), ("TagB", "kb-1", 1), ("TagC", "kb-2", 2)]
    assert msgs[1]["phys"] > msgs[0]["phys"]
    # Tag filter from the pull's own subscription (sysFlag 0x4); an empty
    # alternative is skipped as RocketMQ's FilterAPI does.
    r = pull(c, TOPIC, q, start, sys_flag=0x4, subscription="TagB ||", expressionType="TAG")
    assert [m["body"] for m in decode_msgs(r.body)] == [b"body-310", b"batch-1"], r
    r = pull(c, TOPIC, q, start + 4, sys_flag=0x4, subscription="TagA", want=20)
    assert r.ext["nextBeginOffset"] == str(start + 5), r  # PULL_RETRY_IMMEDIATELY, skipped
    pull(c, TOPIC, q, start, sys_flag=0x4, subscription="||", want=23, remark="does not parse")
    pull(c, TOPIC, q, start, sys_flag=0x4, subscription="a > 1", expressionType="SQL92", want=23,
         remark="SQL92 is not supported")
    # PULL_NOT_FOUND at the end, at once and after a short suspend.
    r = pull(c, TOPIC, q, start + 5, want=19)
    assert r.ext["nextBeginOffset"] == str(start + 5), r
    t = time.monotonic()
    pull(c, TOPIC, q, start + 5, sys_flag=0x2, suspendTimeoutMillis="300", want=19)
    assert time.monotonic() - t >= 0.25, "a suspended pull answered before its timeout"
    # PULL_OFFSET_MOVED past the end.
    r = pull(c, TOPIC, q, start + 100, want=21)
    assert r.ext["nextBeginOffset"] == str(start + 5) and r.ext["maxOffset"] == str(start + 5), r
    # VIEW_MESSAGE_BY_ID (33): by commit-log offset (what offsetMsgId encodes).
    r = c.call(33, {"offset": str(msgs[1]["phys"])})
    assert decode_msgs(r.body) == [msgs[1]]
    c.call(33, {"offset": str(1 << 50)}, want=1, remark="can not find message by the offset")
    # QUERY_MESSAGE (12) by key (the index may lag the send a little).
    def by_key():
        r = c.call(12, {"topic": TOPIC, "key": "k-310", "maxNum": "32", "beginTimestamp": "0",
                        "endTimestamp": str(1 << 62)}, want=None)
        assert r.code in (0, 22), r
        return r if r.code == 0 else None
    r = wait_for(by_key, 10, "the key index to answer k-310")
    assert [m["body"] for m in decode_msgs(r.body)] == [b"body-310"]
    assert int(r.ext["indexLastUpdatePhyoffset"]) > msgs[1]["phys"], r
    c.call(12, {"topic": TOPIC, "key": "no-such-key", "maxNum": "32", "beginTimestamp": "0",
                "endTimestamp": str(1 << 62)}, want=22, remark="can not find message")
    # The slave serves the same bytes, and sends the consumer back to the master.
    s = Conn(p.s_addr)
    r = pull(s, TOPIC, q, start, n=32)
    assert decode_msgs(r.body) == msgs and r.ext["suggestWhichBrokerId"] == "0", r
    pull(s, TOPIC, q, start + 100, want=20)  # a slave never moves an offset
    send_v2(s, TOPIC, q, b"x", "TagA", "k", want=14)[0]  # a slave refuses sends
    s.call(17, {"topic": "OnSlave", "readQueueNums": "1", "writeQueueNums": "1", "perm": "6"},
           want=1, remark="slave")
    s.close()
    c.close()


def test_delay_level_send(args):
    """A DELAY=1 (1 s) send goes through SCHEDULE_TOPIC_XXXX and reaches its own topic and
    queue no sooner than 1 s after it was sent, without the schedule's properties."""
    p = pair(args)
    c = Conn(p.m_addr)
    start = max_offset(c, TOPIC, 3)
    sent_ms = int(time.time() * 1000)
    send_v2(c, TOPIC, 3, b"delayed", "TagA", "k-delay", props(DELAY="1"))

    def arrived():
        r = pull(c, TOPIC, 3, start, want=None)
        return decode_msgs(r.body) if r.code == 0 else None
    m = wait_for(arrived, 30, "the delayed message on its own topic", interval_s=0.1)
    assert [x["body"] for x in m] == [b"delayed"], m
    m = m[0]
    assert m["topic"] == TOPIC and m["queueId"] == 3 and m["queueOffset"] == start, m
    assert m["storeTs"] - sent_ms >= 950, f"delivered {m['storeTs'] - sent_ms} ms after the send"
    assert m["props"]["TAGS"] == "TagA" and m["props"]["KEYS"] == "k-delay", m
    assert not {"DELAY", "REAL_TOPIC", "REAL_QID"} & set(m["props"]), m["props"]
    # A delayed message cannot be part of a batch.
    c.call(320, {"b": TOPIC, "e": "3", "m": "true"},
           batch_entry(b"d", props(DELAY="1")) * 2, want=13, remark="batch")
    c.close()


def test_suggest_slave_when_far_behind(args):
    p = pair(args)
    c = Conn(p.m_addr)
    start = max_offset(c, SLOW, 0)
    body = b"".join(batch_entry(b"%04d" % i + b"x" * 996, props(TAGS="T")) for i in range(30))
    c.call(320, {"a": "WireProducer", "b": SLOW, "e": "0", "m": "true"}, body)
    r = pull(c, SLOW, 0, start, n=1)  # 30 KB behind > slaveReadBehindBytes (20000)
    assert r.ext["suggestWhichBrokerId"] == "1" and len(decode_msgs(r.body)) == 1, r
    r = pull(c, SLOW, 0, start + 29, n=1)
    assert r.ext["suggestWhichBrokerId"] == "0", r
    c.close()


# SEND_MESSAGE_V2 exactly as the Java client's fastjson writes it (ali-ons
# sends the same fields, without "m").
WAKE_UP = frame(
    b'{"code":310,"extFields":{"a":"WireProducer","b":"WireTopic","c":"TBW102","d":"4",'
    b'"e":"2","f":"0","g":"1764633600000","h":"0","i":"TAGS\\u0001TagA\\u0002KEYS\\u0001'
    b'k-wake\\u0002UNIQ_KEY\\u00017F000001000000000000000000004242\\u0002WAIT\\u0001true'
    b'\\u0002","j":"0","k":"false","l":"16","m":"false"},"flag":0,"language":"JAVA",'
    b'"opaque":4242,"serializeTypeCurrentRPC":"JSON","version":401}', b"wake-up")


def test_long_poll_and_out_of_order_answers(args):
    p = pair(args)
    a, b = Conn(p.m_addr), Conn(p.m_addr)
    q = 2
    end = max_offset(a, TOPIC, q)
    ext = {"consumerGroup": "WireGroup", "topic": TOPIC, "queueId": str(q),
           "queueOffset": str(end), "maxMsgNums": "32", "sysFlag": "2", "commitOffset": "0",
           "suspendTimeoutMillis": "20000", "subVersion": "0"}
    held = a.request(11, ext)
    later = a.request(30, {"topic": TOPIC, "queueId": str(q)})
    r = a.read()  # the later request is answered first
    check(r, later, 0)
    assert r.ext["offset"] == str(end)
    b.send(WAKE_UP)
    check(b.read(), 4242, 0)
    r = a.read()
    check(r, held, 0)
    m = decode_msgs(r.body)
    assert [x["body"] for x in m] == [b"wake-up"] and m[0]["queueOffset"] == end, m
    assert m[0]["bornTs"] == 1764633600000 and m[0]["props"] == {
        "TAGS": "TagA", "KEYS": "k-wake", "UNIQ_KEY": "7F000001000000000000000000004242",
        "WAIT": "true"}, m
    assert r.ext["nextBeginOffset"] == str(end + 1), r
    a.close()
    b.close()


def test_send_back_retry_and_dlq(args):
    p = pair(args)
    c = Conn(p.m_addr)
    group, retry, dlq = "WireBackGroup", "%RETRY%WireBackGroup", "%DLQ%WireBackGroup"
    start = max_offset(c, TOPIC, 1)
    r, uniq = send_v2(c, TOPIC, 1, b"fail-me", "TagA", "k-back")
    orig = decode_msgs(pull(c, TOPIC, 1, start, group=group).body)[0]
    assert orig["body"] == b"fail-me"
    phys, retry_off = orig["phys"], 0
    for times in (1, 2):  # delayLevel 1: back in the retry topic after 1 s
        back_ms = int(time.time() * 1000)
        c.call(36, {"group": group, "offset": str(phys), "delayLevel": "1",
                    "originMsgId": r.ext["msgId"], "originTopic": TOPIC, "unitMode": "false",
                    "maxReconsumeTimes": "2"})

        def retried():
            x = pull(c, retry, 0, retry_off, group=group, want=None)
            return decode_msgs(x.body) if x.code == 0 else None
        got = wait_for(retried, 30, f"retry {times} in {retry}", interval_s=0.1)
        assert len(got) == 1, got
        m = got[0]
        assert m["storeTs"] - back_ms >= 950, f"retried after {m['storeTs'] - back_ms} ms"
        assert m["topic"] == retry and m["body"] == b"fail-me" and m["reconsumeTimes"] == times, m
        assert m["props"]["RETRY_TOPIC"] == TOPIC and m["props"]["UNIQ_KEY"] == uniq, m
        assert m["props"]["ORIGIN_MESSAGE_ID"] == r.ext["msgId"], m
        phys, retry_off = m["phys"], retry_off + 1
    # reconsumeTimes 2 = maxReconsumeTimes: the next failure goes to the DLQ at
    # once (write-only, like RocketMQ's).
    c.call(36, {"group": group, "offset": str(phys), "delayLevel": "3",
                "originMsgId": r.ext["msgId"], "maxReconsumeTimes": "2"})
    assert max_offset(c, dlq, 0) == 1
    assert max_offset(c, retry, 0) == 2
    pull(c, dlq, 0, 0, group=group, want=16)
    table = c.call(21).json()["topicConfigTable"]
    assert table[dlq]["perm"] == 2 and table[dlq]["readQueueNums"] == 1, table[dlq]
    assert table[retry]["perm"] == 6, table[retry]
    c.call(36, {"group": group, "offset": str(1 << 50)}, want=1, remark="look message by offset")
    s = Conn(p.s_addr)
    s.call(36, {"group": group, "offset": str(phys)}, want=14, remark="slave")
    s.close()
    c.close()


def heartbeat_body(client, group, expr):
    return json.dumps({"clientID": client, "consumerDataSet": [{
        "groupName": group, "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
        "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "unitMode": False,
        "subscriptionDataSet": [{"classFilterMode": False, "topic": TOPIC, "subString": expr,
                                 "tagsSet": [], "codeSet": [], "subVersion": 1,
                                 "expressionType": "TAG"}]}],
        "producerDataSet": [{"groupName": "WireProducer"}]}).encode()


def test_heartbeat_consumers_offsets_locks(args):
    p = pair(args)
    c = Conn(p.m_addr)
    group, cid = "WireHbGroup", "127.0.0.1@wire-1"
    c.call(34, body=heartbeat_body(cid, group, "TagA"))
    assert c.call(38, {"consumerGroup": group}).json() == {"consumerIdList": [cid]}
    assert "%RETRY%" + group in c.call(21).json()["topicConfigTable"]
    # The registered subscription filters a pull that carries none.
    q, start = 0, 0
    got = decode_msgs(pull(c, TOPIC, q, start, group=group).body)
    assert got and {m["props"]["TAGS"] for m in got} == {"TagA"}, got
    # A second client joins: the first one's connection is told (one-way request 40).
    d = Conn(p.m_addr)
    d.call(34, body=heartbeat_body("127.0.0.1@wire-2", group, "TagA"))
    ids = sorted(c.call(38, {"consumerGroup": group}).json()["consumerIdList"])
    assert ids == sorted([cid, "127.0.0.1@wire-2"]), ids
    def notified():
        if not c.notices:  # reading any answer collects what came before it
            c.call(30, {"topic": TOPIC, "queueId": "0"})
        return c.notices
    wait_for(notified, 10, "NOTIFY_CONSUMER_IDS_CHANGED on the first client's connection")
    n = c.notices[0]
    assert n.code == 40 and n.flag == ONEWAY and n.ext == {"consumerGroup": group}, n
    d.call(35, {"clientID": "127.0.0.1@wire-2", "consumerGroup": group})
    d.close()
    c.call(35, {"clientID": cid, "producerGroup": "WireProducer", "consumerGroup": group})
    c.call(38, {"consumerGroup": group}, want=1, remark="no consumer for this group")
    # Offsets.
    og = "WireOffGroup"
    assert c.call(14, {"consumerGroup": og, "topic": TOPIC, "queueId": "0"}).ext == {"offset": "0"}
    c.call(15, {"consumerGroup": og, "topic": TOPIC, "queueId": "0", "commitOffset": "2"})
    assert c.call(14, {"consumerGroup": og, "topic": TOPIC, "queueId": "0"}).ext["offset"] == "2"
    c.request(15, {"consumerGroup": og, "topic": TOPIC, "queueId": "0", "commitOffset": "3"},
              flag=ONEWAY)  # one-way: no reply; the next answer is the query's
    r = c.call(14, {"consumerGroup": og, "topic": TOPIC, "queueId": "0"})
    assert r.ext["offset"] == "3", r
    stats = c.call(208, {"consumerGroup": og, "topic": TOPIC}).body.decode()
    mx = max_offset(c, TOPIC, 0)
    assert re.search(r'\{"brokerName":"broker-a","queueId":0,"topic":"WireTopic"\}:'
                     r'\{"brokerOffset":%d,"consumerOffset":3,"lastTimestamp":\d+\}' % mx,
                     stats), stats
    # Queue offsets.
    assert c.call(31, {"topic": TOPIC, "queueId": "0"}).ext == {"offset": "0"}
    assert c.call(29, {"topic": TOPIC, "queueId": "0", "timestamp": "0"}).ext == {"offset": "0"}
    r = c.call(29, {"topic": TOPIC, "queueId": "0", "timestamp": str(1 << 50)})
    assert r.ext == {"offset": str(mx)}, r
    first = decode_msgs(pull(c, TOPIC, 0, 0, n=1).body)[0]
    assert c.call(32, {"topic": TOPIC, "queueId": "0"}).ext == {"timestamp": str(first["storeTs"])}
    c.call(17, {"topic": "WireEmpty", "readQueueNums": "1", "writeQueueNums": "1", "perm": "6"})
    # An empty queue has no earliest store time: SUCCESS with -1, as RocketMQ.
    assert c.call(32, {"topic": "WireEmpty", "queueId": "0"}).ext == {"timestamp": "-1"}
    assert c.call(30, {"topic": "WireEmpty", "queueId": "0"}).ext == {"offset": "0"}
    pull(c, "WireEmpty", 0, 0, want=19)
    pull(c, "WireEmpty", 1, 0, want=1, remark="queue 1 of topic 'WireEmpty' does not exist")
    c.call(30, {"topic": "NoSuchTopic", "queueId": "0"}, want=17, remark="does not exist")
    # Locks: two clients contend for queue 1.
    def lock(client, qids, code=41):
        body = json.dumps({"consumerGroup": "WireLockGroup", "clientId": client, "mqSet": [
            {"topic": TOPIC, "brokerName": "broker-a", "queueId": i} for i in qids]}).encode()
        r = c.call(code, body=body)
        return sorted(mq["queueId"] for mq in r.json()["lockOKMQSet"]) if code == 41 else r
    assert lock("c1", [0, 1]) == [0, 1]
    assert lock("c2", [1, 2]) == [2]
    assert lock("c1", [1]) == [1]  # renewal by the holder
    assert lock("c1", [1], code=42).body == b""
    assert lock("c2", [1, 2]) == [1, 2]
    # Topics and runtime info.
    t = c.call(21).json()
    assert t["topicConfigTable"][TOPIC] == {"topicName": TOPIC, "readQueueNums": 4,
                                            "writeQueueNums": 4, "perm": 6,
                                            "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0,
                                            "order": False}, t["topicConfigTable"][TOPIC]
    assert set(t["dataVersion"]) == {"timestamp", "counter"}
    info = c.call(28).json()["table"]
    assert info["brokerVersion"] == "401" and int(info["commitLogMaxOffset"]) > 0, info
    assert int(info["msgPutTotalTodayNow"]) >= 5, info
    c.close()


# Every code the broker's handle() and the name server serve, in the binary
# encoding: (port, code, ext, body, expected code).
def binary_cases(p):
    hb = heartbeat_body("127.0.0.1@wire-bin", "WireBinGroup", "*")
    lock = json.dumps({"consumerGroup": "WireBinGroup", "clientId": "bin", "mqSet": [
        {"topic": TOPIC, "brokerName": "broker-a", "queueId": 3}]}).encode()
    q3 = {"topic": TOPIC, "queueId": "3"}
    v2 = {"a": "WireProducer", "b": TOPIC, "e": "3", "i": props(TAGS="TagB", KEYS="k-bin")}
    return [
        (p.m_addr, 10, {"producerGroup": "WireProducer", "topic": TOPIC, "queueId": "3"}, b"b10", 0),
        (p.m_addr, 310, v2, b"b310", 0),
        (p.m_addr, 320, {"b": TOPIC, "e": "3", "m": "true"}, batch_entry(b"b320", ""), 0),
        (p.m_addr, 11, {"consumerGroup": "WireBinGroup", "topic": TOPIC, "queueId": "3",
                        "queueOffset": "0", "maxMsgNums": "1", "sysFlag": "0"}, b"", 0),
        (p.m_addr, 36, {"group": "WireBinGroup", "offset": "0"}, b"", 0),
        (p.m_addr, 34, {}, hb, 0),
        (p.m_addr, 38, {"consumerGroup": "WireBinGroup"}, b"", 0),
        (p.m_addr, 35, {"clientID": "127.0.0.1@wire-bin"}, b"", 0),
        (p.m_addr, 15, dict(q3, consumerGroup="WireBinGroup", commitOffset="1"), b"", 0),
        (p.m_addr, 14, dict(q3, consumerGroup="WireBinGroup"), b"", 0),
        (p.m_addr, 30, q3, b"", 0), (p.m_addr, 31, q3, b"", 0),
        (p.m_addr, 29, dict(q3, timestamp="0"), b"", 0), (p.m_addr, 32, q3, b"", 0),
        (p.m_addr, 41, {}, lock, 0), (p.m_addr, 42, {}, lock, 0),
        (p.m_addr, 17, {"topic": "WireBinTopic", "readQueueNums": "1", "writeQueueNums": "1",
                        "perm": "6"}, b"", 0),
        (p.m_addr, 21, {}, b"", 0), (p.m_addr, 33, {"offset": "0"}, b"", 0),
        (p.m_addr, 12, {"topic": TOPIC, "key": "k-bin", "maxNum": "1"}, b"", 0),
        (p.m_addr, 28, {}, b"", 0), (p.m_addr, 208, {"consumerGroup": "WireBinGroup"}, b"", 0),
        (p.m_addr, 13, {}, b"", 3),
        (p.ns, 105, {"topic": TOPIC}, b"", 0), (p.ns, 106, {}, b"", 0), (p.ns, 206, {}, b"", 0),
        (p.ns, 101, {"namespace": "n", "key": "k"}, b"", 22), (p.ns, 34, {}, hb, 3),
    ]


def test_binary_header_encoding(args):
    p = pair(args)
    conns = {p.m_addr: Conn(p.m_addr), p.ns: Conn(p.ns)}
    for addr, code, ext, body, want in binary_cases(p):
        if code == 12:  # the key index may lag the sends a little
            wait_for(lambda: conns[addr].call(code, ext, want=None).code == 0, 10,
                     "the key index to answer k-bin")
        json_r = conns[addr].call(code, ext, body, JSON, want)
        bin_r = conns[addr].call(code, ext, body, BINARY, want)
        assert set(bin_r.ext) == set(json_r.ext), (code, json_r, bin_r)
        assert (bin_r.remark is None) == (json_r.remark is None), (code, json_r, bin_r)
        if code in (105, 106, 206, 21, 38, 41):  # same JSON body in either encoding
            assert bin_r.json().keys() == json_r.json().keys(), (code, bin_r)
        if code in (11, 33):
            assert decode_msgs(bin_r.body) == decode_msgs(json_r.body), code
    for c in conns.values():
        c.close()


def closes(addr, data):
    c = Conn(addr)
    c.send(data)
    assert c.closed_by_peer()
    c.close()


def test_bad_input_both_ports(args):
    p = pair(args)
    ok = java_header(206, 1)
    for addr, proc, ns in ((p.ns, p.ns_proc, True), (p.m_addr, p.master, False)):
        bad = [
            ("total < 4", b"\x00\x00\x00\x02\x00\x00\x00\x00"),
            ("header longer than the frame", struct.pack(">II", 14, 100) + b"0123456789"),
            ("serialize type 7", frame(ok, stype=7)),
            ("100 MB frame", struct.pack(">II", 100 << 20, len(ok)) + ok),
            ("header over 64 KiB", struct.pack(">II", 4 + 70000, 70000) + b"{" * 1000),
            ("non-JSON header", frame(b"hello, broker")),
            ("JSON array header", frame(b"[1,2,3]")),
            ("missing code", frame(b'{"opaque":5,"flag":0,"extFields":{}}')),
            ("code not a number", frame(b'{"code":"ten","opaque":5}')),
            ("binary header cut short", frame(b"\x00\x1e\x00\x01", stype=BINARY)),
        ]
        for what, data in bad:
            try:
                closes(addr, data)
            except AssertionError as e:
                raise AssertionError(f"{what}: {e}") from None
            alive(p, proc, addr, ns)
        # Errors that keep the connection open: the next request is answered.
        c = Conn(addr)
        c.send(frame(java_header(105 if ns else 30, 9, {"queueId": "0"})))
        assert c.read_raw() == frame(
            b'{"code":1,"extFields":{},"flag":1,"language":"JAVA","opaque":9,'
            b'"remark":"the custom field <topic> is null","serializeTypeCurrentRPC":"JSON",'
            b'"version":401}')
        if ns:
            c.call(105, {}, want=1, remark="^the custom field <topic> is null$")
        else:
            c.call(30, {"queueId": "0"}, want=1, remark="^the custom field <topic> is null$")
            c.call(11, {"consumerGroup": "G", "topic": TOPIC, "queueId": "0", "queueOffset": "0",
                        "sysFlag": "0"}, want=1, remark="<maxMsgNums> is null")
            c.call(30, {"topic": TOPIC, "queueId": "x"}, want=1, remark="<queueId> is not an int")
            good = batch_entry(b"fine", props(TAGS="A"))
            c.call(320, {"b": TOPIC, "e": "0", "m": "true"}, good + good[:-3], want=13,
                   remark="malformed batch body")
            c.call(34, body=b"{not json", want=1, remark="not a HeartbeatData JSON object")
            c.call(34, body=b"[]", want=1, remark="HeartbeatData")
            c.call(41, body=b"nope", want=1, remark="LockBatchRequestBody")
            c.call(10, {"producerGroup": "P", "topic": TOPIC, "queueId": "0",
                        "properties": "no-separator"}, b"x", want=13, remark="malformed properties")
            c.call(10, {"producerGroup": "P", "topic": TOPIC, "queueId": "0", "sysFlag": "4"},
                   b"x", want=13, remark="transactional")
            c.call(310, {"a": "P", "e": "0"}, b"x", want=1, remark="<topic> is null")
        c.call(206 if ns else 30, {} if ns else {"topic": TOPIC, "queueId": "0"})
        c.close()
        alive(p, proc, addr, ns)


def test_clean_shutdown(args):
    """After all of the above, every process stops cleanly on SIGTERM (exit 0, and
    no sanitizer report in the ASan build)."""
    p = pair(args)
    for proc in (p.slave, p.master, p.ns_proc):
        assert proc.p.poll() is None, f"exited early:\n{proc.stderr_text()[-3000:]}"
    p.stop()
    for proc in (p.slave, p.master, p.ns_proc):
        err = proc.stderr_text()
        assert proc.p.returncode == 0, f"exit {proc.p.returncode}:\n{err[-3000:]}"
        assert "Sanitizer" not in err and "runtime error" not in err, err[-3000:]


if __name__ == "__main__":
    try:
        main([test_helpers_match_literal_bytes, test_unsupported_codes_exact_bytes,
              test_name_server, test_delete_topic, test_send_pull_view_query, test_delay_level_send,
              test_suggest_slave_when_far_behind, test_long_poll_and_out_of_order_answers,
              test_send_back_retry_and_dlq, test_heartbeat_consumers_offsets_locks,
              test_binary_header_encoding, test_bad_input_both_ports, test_clean_shutdown])
    finally:
        for p in _pair:
            p.stop()
