"""Unchanged RocketMQ clients against Ferry (issue: RocketMQ protocol, acceptance 1).

The client is ali-ons 3.12.0, the pure-JavaScript RocketMQ 4.x client from
the npm registry (installed by scripts/install-deps.sh into
tests/integration/rmq/node_modules), driven by tests/integration/rmq/client.js.
It speaks RocketMQ's remoting protocol to Ferry's name server and brokers on
their usual ports; no one on the team wrote it.

One name server and a SYNC_MASTER/SLAVE pair (slaveReadEnable, a low
slaveReadBehindBytes so redirects happen on small backlogs), all on port 0:
- a producer sends 10,000 messages with tags and keys; a clustering group of
  two consumers subscribed to "TagA || TagB" receives every TagA/TagB message
  and no TagC one, split across both, with keys intact;
- a message whose handler fails once comes back through %RETRY%<group> with
  reconsumeTimes 1 and its original topic, after RocketMQ's back-off (delay
  level 3, 10 s);
- a message sent with a delay level arrives no sooner than that delay;
- a consumer far behind is redirected to the slave (its pulls go to the
  slave's address) and comes back to the master once caught up;
- with the master killed (SIGKILL) mid-consumption, the consumer keeps
  consuming from the slave until it has every message the master
  acknowledged with SEND_OK.
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

from harness import Proc, fresh_dir, main, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RMQ = os.path.join(ROOT, "tests", "integration", "rmq")
CLIENT = os.path.join(RMQ, "client.js")


def node_ready():
    return shutil.which("node") and os.path.isdir(os.path.join(RMQ, "node_modules", "ali-ons"))


def port_of(proc, pattern, what):
    def find():
        assert proc.p.poll() is None, f"{what} exited:\n{proc.stderr_text()[-2000:]}"
        for line in proc.lines():
            m = re.match(pattern, line)
            if m:
                return int(m.group(1))
        return None
    return wait_for(find, 30, f"{what} to print its port", interval_s=0.02)


class Pair:
    """A name server, a SYNC_MASTER and its slave, on loopback, port 0."""

    def __init__(self, args, name):
        self.args = args
        self.dir = fresh_dir(args.tmp, name)
        self.ns_proc = Proc([self.bin("mqnamesrv"), "-o", "listenPort=0", "-o",
                             "listenAddress=127.0.0.1"], os.path.join(self.dir, "namesrv.out"))
        self.ns = "127.0.0.1:%d" % port_of(self.ns_proc, r"^mqnamesrv listening on port (\d+)$",
                                          "mqnamesrv")
        self.master = self.broker("master", "broker-a.conf",
                                  ["slaveReadEnable=true", "slaveReadBehindBytes=20000"])
        self.m_addr = "127.0.0.1:%d" % port_of(self.master, r"^mqbroker listening on port (\d+)$",
                                              "master")
        self.slave = self.broker("slave", "broker-a-s.conf", [])
        self.s_addr = "127.0.0.1:%d" % port_of(self.slave, r"^mqbroker listening on port (\d+)$",
                                              "slave")

    def bin(self, name):
        return os.path.join(self.args.bin, name)

    def broker(self, name, conf, extra):
        argv = [self.bin("mqbroker"), "-c", os.path.join(ROOT, "conf", conf)]
        for kv in ["namesrvAddr=" + self.ns, "listenPort=0", "haListenPort=0",
                   "listenAddress=127.0.0.1", "brokerIP1=127.0.0.1",
                   f"storePathRootDir={self.dir}/{name}", f"pidFile={self.dir}/{name}.pid",
                   "registerNameServerPeriod=1000", "slaveSyncMetadataInterval=300",
                   "haSendHeartbeatInterval=200", "haHousekeepingInterval=2000",
                   "mappedFileSizeCommitLog=67108864", "maxHashSlotNum=10007",
                   "maxIndexNum=400000", "autoCreateTopicEnable=false"] + extra:
            argv += ["-o", kv]
        return Proc(argv, os.path.join(self.dir, f"{name}.out"))

    def tool(self, *argv, check=True, timeout=60):
        r = subprocess.run([self.bin(argv[0])] + list(argv[1:]), capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"{argv}: {r.stdout}\n{r.stderr}"
        return r

    def create_topic(self, topic, queues):
        self.tool("mqadmin", "updateTopic", "-n", self.ns, "-b", self.m_addr, "-t", topic,
                  "-r", str(queues), "-w", str(queues))

        def routed_with_slave():
            r = self.tool("mqadmin", "topicRoute", "-n", self.ns, "-t", topic, check=False)
            return r.returncode == 0 and self.s_addr in r.stdout and self.m_addr in r.stdout
        wait_for(routed_with_slave, 30, f"route of {topic} listing master and slave")

    def stop(self):
        for p in (self.slave, self.master, self.ns_proc):
            if p.p.poll() is None:
                p.p.send_signal(signal.SIGTERM)
        for p in (self.slave, self.master, self.ns_proc):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill9()


def produce(pair, topic, count, prefix, tags="TagA", *extra):
    r = subprocess.run(["node", CLIENT, "produce", "--ns", pair.ns, "--topic", topic, "--count",
                        str(count), "--prefix", prefix, "--tags", tags, "--inflight", "64"] +
                       list(extra),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"producer exited {r.returncode}: {r.stderr[-3000:]}"
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(lines) == count, f"{len(lines)} results for {count} sends: {r.stderr[-2000:]}"
    return lines


class Consumer:
    def __init__(self, pair, name, topic, group, *extra):
        self.proc = Proc(["node", CLIENT, "consume", "--ns", pair.ns, "--topic", topic,
                          "--group", group] + list(extra),
                         os.path.join(pair.dir, f"consumer-{name}.out"))

    def messages(self):
        out = []
        for line in self.proc.lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line still being written
        return out

    def received(self):
        return [m for m in self.messages() if "body" in m]

    def stop(self):
        if self.proc.p.poll() is None:
            self.proc.p.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill9()


def test_group_of_two_with_tags_and_keys(args, pair):
    pair.create_topic("RmqOrders", 8)
    c1 = Consumer(pair, "g1", "RmqOrders", "RmqGroup", "--expr", "TagA || TagB")
    c2 = Consumer(pair, "g2", "RmqOrders", "RmqGroup", "--expr", "TagA || TagB")
    try:
        def settled():  # both see two members and split the 8 queues between them
            last = []
            for c in (c1, c2):
                allocs = [m for m in c.messages() if "allocated" in m]
                if not allocs or allocs[-1]["members"] != 2:
                    return False
                last.append(set(allocs[-1]["allocated"]))
            return len(last[0] | last[1]) == 8 and not last[0] & last[1]
        wait_for(settled, 60, "the group of two to split the queues", interval_s=0.2)
        sent = produce(pair, "RmqOrders", 10000, "o", "TagA,TagB,TagC")
        bad = [s for s in sent if s["status"] != "SEND_OK"]
        assert not bad, f"{len(bad)} sends not SEND_OK, e.g. {bad[:3]}"
        want = {s["body"]: s for s in sent if s["tag"] in ("TagA", "TagB")}

        def all_received():
            got = {m["body"] for m in c1.received()} | {m["body"] for m in c2.received()}
            return set(want) <= got
        wait_for(all_received, 180, "both consumers together to receive every TagA/TagB message",
                 interval_s=0.5)
    finally:
        c1.stop()
        c2.stop()
    r1, r2 = c1.received(), c2.received()
    got = r1 + r2
    assert not [m for m in got if m["tags"] == "TagC"], "a TagC message passed the tag filter"
    assert r1 and r2, f"not split across the group: {len(r1)} and {len(r2)}"
    for m in got:
        assert m["keys"] == want[m["body"]]["key"], m
        assert m["tags"] == want[m["body"]]["tag"], m
    dups = len(got) - len({m["body"] for m in got})
    # At-least-once: a rebalance may hand a queue over before its offset is
    # committed; with the group settled first, at most a pull batch.
    assert dups <= 32, f"{dups} duplicate deliveries"
    print(f"  {len(want)} TagA/TagB messages: {len(r1)} + {len(r2)} deliveries, {dups} duplicates")


def test_failed_message_comes_back_through_retry(args, pair):
    pair.create_topic("RmqRetry", 2)
    c = Consumer(pair, "retry", "RmqRetry", "RmqRetryGroup", "--fail-once", "retry-me-0")
    try:
        wait_for(lambda: "%RETRY%RmqRetryGroup" in pair.tool(
            "mqadmin", "topicList", "-n", pair.ns).stdout, 30,
            "the broker to create and register %RETRY%RmqRetryGroup on the consumer's heartbeat")
        sent = produce(pair, "RmqRetry", 1, "retry-me")
        assert sent[0]["status"] == "SEND_OK", sent
        wait_for(lambda: any(m.get("body") == "retry-me-0" for m in c.received()), 60,
                 "the failed message to come back through the retry topic")
    finally:
        c.stop()
    msgs = c.messages()
    failed = [m for m in msgs if m.get("failed") == "retry-me-0"]
    back = [m for m in msgs if m.get("body") == "retry-me-0"]
    assert len(failed) == 1, msgs
    assert back[0]["reconsumeTimes"] == 1, back
    assert back[0]["retryTopic"] == "RmqRetry", back
    assert back[0]["originMsgId"] == failed[0]["msgId"], (back, failed)
    # RocketMQ's back-off: the first retry waits delay level 3 (10 s).
    assert back[0]["t"] - failed[0]["t"] >= 9000, f"retried after {back[0]['t'] - failed[0]['t']} ms"


def test_delayed_message(args, pair):
    """A message sent with delay level 2 (5 s) arrives no sooner, on its own topic."""
    pair.create_topic("RmqDelay", 2)
    c = Consumer(pair, "delay", "RmqDelay", "RmqDelayGroup")
    try:
        sent = produce(pair, "RmqDelay", 3, "later", "TagD", "--delay-level", "2")
        assert all(s["status"] == "SEND_OK" for s in sent), sent
        wait_for(lambda: len(c.received()) >= 3, 60, "the delayed messages")
    finally:
        c.stop()
    got = {m["body"]: m for m in c.received()}
    for s in sent:
        m = got[s["body"]]
        assert m["t"] - s["t"] >= 4500, f"{s['body']} arrived {m['t'] - s['t']} ms after SEND_OK"
        assert m["tags"] == "TagD" and m["keys"] == s["key"], m


def test_redirect_to_slave_and_back(args, pair):
    pair.create_topic("RmqRedirect", 2)
    sent = produce(pair, "RmqRedirect", 3000, "r")
    assert all(s["status"] == "SEND_OK" for s in sent)
    c = Consumer(pair, "redirect", "RmqRedirect", "RmqRedirectGroup")
    try:
        wait_for(lambda: {m["body"] for m in c.received()} >= {s["body"] for s in sent}, 120,
                 "the backlog to be consumed")
        froms = {m["from"] for m in c.received()}
        assert pair.s_addr in froms, f"never redirected to the slave: pulls from {froms}"
        late = produce(pair, "RmqRedirect", 20, "late")
        wait_for(lambda: {m["body"] for m in c.received()} >= {s["body"] for s in late}, 60,
                 "the late messages")
        late_from = {m["from"] for m in c.received() if m["body"].startswith("late-")}
        assert pair.m_addr in late_from, f"did not come back to the master: {late_from}"
    finally:
        c.stop()


def rmq_frame(code, opaque, ext, body=b""):
    header = json.dumps({"code": code, "language": "JAVA", "version": 401, "opaque": opaque,
                         "flag": 0, "extFields": ext}).encode()
    return struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body


_pending = {}


def rmq_read(sock, deadline_s):
    """One remoting frame: (header dict, body). Bytes past it stay for the next call."""
    sock.settimeout(deadline_s)
    buf = _pending.pop(sock, b"")
    while len(buf) < 8 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = sock.recv(65536)
        assert chunk, "the broker closed the connection"
        buf += chunk
    total, hlen = struct.unpack(">II", buf[:8])
    _pending[sock] = buf[4 + total:]
    assert hlen >> 24 == 0, "answered in another header encoding than the request's"
    return json.loads(buf[8:8 + hlen]), buf[8 + hlen:4 + total]


def test_group_change_is_notified(args, pair):
    """A RocketMQ consumer is told (NOTIFY_CONSUMER_IDS_CHANGED, one-way) when
    another joins its group, so it rebalances at once instead of at its next
    periodic rebalance."""
    host, port = pair.m_addr.split(":")

    def heartbeat(sock, client_id, opaque):
        body = json.dumps({"clientID": client_id, "producerDataSet": [], "consumerDataSet": [{
            "groupName": "RmqNotifyGroup", "consumeType": "CONSUME_PASSIVELY",
            "messageModel": "CLUSTERING", "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
            "unitMode": False, "subscriptionDataSet": [{"topic": "RmqOrders", "subString": "*",
                                                         "tagsSet": [], "codeSet": []}]}]}).encode()
        sock.sendall(rmq_frame(34, opaque, {}, body))

    def answer(sock, opaque):
        """Reads up to the response to opaque; returns it and the notifications before it."""
        notes = []
        while True:
            h, _ = rmq_read(sock, 10)
            if h["flag"] & 1 and h["opaque"] == opaque:
                return h, notes
            notes.append(h)

    def notified(sock):
        h, _ = rmq_read(sock, 10)
        assert h["code"] == 40 and h["flag"] == 2, h  # NOTIFY_CONSUMER_IDS_CHANGED, one-way
        assert h["extFields"]["consumerGroup"] == "RmqNotifyGroup", h

    a = socket.create_connection((host, int(port)), timeout=10)
    b = socket.create_connection((host, int(port)), timeout=10)
    try:
        heartbeat(a, "10.0.0.1@notify-a", 1)
        h, notes = answer(a, 1)
        assert h["code"] == 0, h
        if not notes:  # a's own joining is announced too (RocketMQ notifies every member)
            notified(a)
        heartbeat(b, "10.0.0.1@notify-b", 1)
        h, _ = answer(b, 1)
        assert h["code"] == 0, h
        notified(a)  # b joined
    finally:
        b.close()
    notified(a)  # b's connection closed
    a.close()


def test_master_killed_consumer_keeps_reading_from_slave(args, pair):
    pair.create_topic("RmqFailover", 4)
    sent = produce(pair, "RmqFailover", 2000, "f")
    acked = {s["body"] for s in sent if s["status"] == "SEND_OK"}
    assert len(acked) == 2000, f"only {len(acked)} SEND_OK with the slave attached"
    c = Consumer(pair, "failover", "RmqFailover", "RmqFailoverGroup", "--handler-delay-ms", "3")
    try:
        wait_for(lambda: len(c.received()) >= 200, 60, "the consumer to get going")
        pair.master.kill9()
        wait_for(lambda: {m["body"] for m in c.received()} >= acked, 180,
                 "every SEND_OK message, the rest from the slave", interval_s=0.5)
    finally:
        c.stop()
    froms = {m["from"] for m in c.received()}
    assert pair.s_addr in froms, f"nothing was read from the slave: {froms}"
    lost = acked - {m["body"] for m in c.received()}
    assert not lost, f"{len(lost)} acknowledged messages lost"


_pair = []


def with_pair(test):
    """All tests share one pair (the last one kills its master)."""
    def run(args):
        if not _pair:
            assert node_ready(), "node or ali-ons missing: run scripts/install-deps.sh"
            _pair.append(Pair(args, "rmq-clients"))
        test(args, _pair[0])
    run.__name__ = test.__name__
    return run


if __name__ == "__main__":
    try:
        main([with_pair(t) for t in (test_group_of_two_with_tags_and_keys,
                                     test_failed_message_comes_back_through_retry,
                                     test_delayed_message,
                                     test_redirect_to_slave_and_back,
                                     test_group_change_is_notified,
                                     test_master_killed_consumer_keeps_reading_from_slave)])
    finally:
        for p in _pair:
            p.stop()
