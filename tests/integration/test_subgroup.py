"""Subscription groups managed by an operator (mqadmin updateSubGroup,
deleteSubGroup, subGroupList; RocketMQ requests 200, 201, 207).

Real processes: a name server, a master and its slave, both with
autoCreateSubscriptionGroup=false, so a consumer group exists only once an
operator creates it:
  - consuming with an unknown group fails with a clear error (mqconsume says
    so on stderr, a raw RocketMQ pull gets SUBSCRIPTION_GROUP_NOT_EXIST, 26);
    once `mqadmin updateSubGroup` creates the group, the same consumer gets
    every message;
  - retryMaxTimes and retryQueueNums take effect on CONSUMER_SEND_MSG_BACK
    (to the DLQ at once with -r 0; the retry topic follows -q);
  - consumeEnable=false refuses pulls with NO_PERMISSION (16) "subscription
    group no permission", on the master and on the slave that copied it;
  - the slave refuses changes; the table survives a master restart;
  - deleteSubGroup removes the group (-b, and -c for a cluster);
  - the RocketMQ requests 200/201/207 in both header encodings;
  - mqadmin's own checks of its flags.
"""
import json

from harness import fresh_dir, main, wait_for
from test_broker_e2e import (Broker, Consumer, NameServer, mqadmin, produce, slow, table,
                             wait_routed)
from test_rocketmq_wire import BINARY, JSON, Conn, decode_msgs, pull

TOPIC = "SG_TOPIC"
GROUP = "SG_G"
NOT_EXIST, NO_PERMISSION, SYSTEM_ERROR, TOPIC_NOT_EXIST = 26, 16, 1, 17
SLAVE_REMARK = ("Can't modify topic or subscription group from slave broker, please execute it "
                "from master broker.")


class Setup:
    """What test_broker_e2e's helpers need (args, dir, ns) plus the pair."""

    def __init__(self, args):
        self.args = args
        self.dir = fresh_dir(args.tmp, "subgroup")
        self.ns = NameServer(args, self.dir)
        common = ["autoCreateSubscriptionGroup=false", "autoCreateTopicEnable=false",
                  "slaveSyncMetadataInterval=300"]
        self.master = Broker(args, self.dir, "sg-a", self.ns.addr, common)
        self.slave = Broker(args, self.dir, "sg-a-s", self.ns.addr, common + [
            "brokerName=sg-a", "brokerRole=SLAVE", "brokerId=1",
            f"haMasterAddress=127.0.0.1:{self.master.ha_port}"])
        self.brokers = [self.master]

    def stop(self):
        for b in (self.slave, self.master):
            assert b.proc.stop(30 * slow(self.args)) == 0, b.proc.describe()
        assert self.ns.proc.stop(30) == 0, self.ns.proc.describe()


def groups(s, addr):
    """subGroupList -b addr as {group: {column: value}}."""
    out = mqadmin(s, "subGroupList", "-b", addr).stdout
    head = out.splitlines()[0].split()
    assert head[0] == "#groupName", out
    return {row[0]: dict(zip((h.lstrip("#") for h in head[1:]), row[1:])) for row in table(out)}


def max_offset(conn, topic, qid=0):
    r = conn.call(30, {"topic": topic, "queueId": str(qid)}, want=None)
    return int(r.ext["offset"]) if r.code == 0 else None


def send_back(conn, phys, group=GROUP, want=0):
    return conn.call(36, {"group": group, "offset": str(phys), "delayLevel": "0",
                          "originMsgId": "", "originTopic": TOPIC}, want=want)


def test_subscription_groups(args):
    s = Setup(args)
    m, sl = s.master, s.slave
    mqadmin(s, "updateTopic", "-b", m.addr, "-t", TOPIC, "-r", "2", "-w", "2")
    wait_routed(s, TOPIC, 2)
    bodies = [f"sg-{i}" for i in range(20)]
    produce(s, TOPIC, bodies)
    conn = Conn(m.addr)

    # an unknown group: refused, with a message that says what to do
    r = pull(conn, TOPIC, 0, 0, group=GROUP, want=NOT_EXIST)
    assert f"subscription group [{GROUP}] does not exist on broker sg-a" in r.remark, r
    assert "mqadmin updateSubGroup" in r.remark, r
    cons = Consumer(s, "unknown", TOPIC, GROUP, "--from", "first", "--max", str(len(bodies)))
    wait_for(lambda: "CONSUMER_GROUP_NOT_EXIST" in cons.proc.stderr_text()
             and f"subscription group [{GROUP}] does not exist" in cons.proc.stderr_text(),
             30 * slow(args), "mqconsume to report the unknown group")
    assert cons.count() == 0 and GROUP not in groups(s, m.addr)

    # created by the operator: the same consumer gets everything
    r = mqadmin(s, "updateSubGroup", "-b", m.addr, "-g", GROUP, "-r", "0")
    assert r.stdout.splitlines() == [
        f"create subscription group to {m.addr} success.",
        f"SubscriptionGroupConfig [groupName={GROUP}, consumeEnable=true, "
        "consumeFromMinEnable=false, consumeBroadcastEnable=false, retryQueueNums=1, "
        "retryMaxTimes=0, brokerId=0, whichBrokerWhenConsumeSlowly=1, "
        "notifyConsumerIdsChangedEnable=true]"], r.stdout
    assert cons.proc.wait(60 * slow(args)) == 0, cons.proc.describe()
    assert sorted(x["body"] for x in cons.msgs()) == sorted(bodies)
    g = groups(s, m.addr)[GROUP]
    assert g["retryMaxTimes"] == "0" and g["consumeEnable"] == "true", g

    # retryMaxTimes 0: a message sent back goes to the DLQ at once
    phys = decode_msgs(pull(conn, TOPIC, 0, 0, group=GROUP, n=1).body)[0]["phys"]
    send_back(conn, phys)
    assert max_offset(conn, "%DLQ%" + GROUP) == 1
    assert max_offset(conn, "%RETRY%" + GROUP) is None  # no such topic
    # retryMaxTimes 5 and 3 retry queues: retried instead, in a topic of 3 queues
    mqadmin(s, "updateSubGroup", "-b", m.addr, "-g", GROUP, "-r", "5", "-q", "3")
    send_back(conn, phys)
    assert max_offset(conn, "%DLQ%" + GROUP) == 1

    def retry_queues():
        t = conn.call(21).json()["topicConfigTable"]["%RETRY%" + GROUP]
        return t["readQueueNums"], t["writeQueueNums"]
    assert retry_queues() == (3, 3)
    mqadmin(s, "updateSubGroup", "-b", m.addr, "-g", GROUP, "-r", "5", "-q", "1")
    assert retry_queues() == (3, 1)  # writes move at once; queues already read stay

    # consumeEnable false: pulls refused, on the master and on the slave's copy
    mqadmin(s, "updateSubGroup", "-b", m.addr, "-g", GROUP, "-s", "false", "-r", "5")
    r = pull(conn, TOPIC, 0, 0, group=GROUP, want=NO_PERMISSION)
    assert r.remark.startswith(f"subscription group no permission, {GROUP}"), r
    wait_for(lambda: groups(s, sl.addr).get(GROUP, {}).get("consumeEnable") == "false",
             30 * slow(args), "the slave to copy the group", interval_s=0.1)
    sconn = Conn(sl.addr)
    pull(sconn, TOPIC, 0, 0, group=GROUP, want=NO_PERMISSION)

    # the slave refuses changes, through mqadmin and RocketMQ's requests
    for sub in ("updateSubGroup", "deleteSubGroup"):
        r = mqadmin(s, sub, "-b", sl.addr, "-g", GROUP, check=False)
        assert r.returncode == 1 and "sg-a is a slave" in r.stderr and not r.stdout, r
    sconn.call(200, body=json.dumps({"groupName": "SG_S"}).encode(), want=SYSTEM_ERROR,
               remark="^" + SLAVE_REMARK.replace(".", r"\.") + "$")
    sconn.call(207, {"groupName": GROUP}, want=SYSTEM_ERROR, remark="from slave broker")
    assert GROUP in sconn.call(201).json()["subscriptionGroupTable"]
    sconn.close()

    # the table survives a restart of the master
    conn.close()
    assert m.proc.stop(30 * slow(args)) == 0, m.proc.describe()
    m.start()
    g = groups(s, m.addr)[GROUP]
    assert (g["consumeEnable"], g["retryMaxTimes"], g["retryQueueNums"]) == ("false", "5", "1"), g
    conn = Conn(m.addr)
    pull(conn, TOPIC, 0, 0, group="SG_OTHER", want=NOT_EXIST)  # still no auto-creation

    # RocketMQ's requests, both header encodings
    for stype, name in ((JSON, "SG_WJ"), (BINARY, "SG_WB")):
        conn.call(200, body=json.dumps({"groupName": name, "retryQueueNums": 2,
                                        "consumeBroadcastEnable": False}).encode(), stype=stype)
        doc = conn.call(201, stype=stype).json()
        assert doc["dataVersion"]["counter"] > 0, doc
        t = doc["subscriptionGroupTable"]
        assert t[name] == {"groupName": name, "consumeEnable": True,
                           "consumeFromMinEnable": True, "consumeBroadcastEnable": False,
                           "retryQueueNums": 2, "retryMaxTimes": 16, "brokerId": 0,
                           "whichBrokerWhenConsumeSlowly": 1,
                           "notifyConsumerIdsChangedEnable": True}, t[name]
        assert t[GROUP]["consumeEnable"] is False, t[GROUP]
        conn.call(207, {"groupName": name, "removeOffset": "true"}, stype=stype)
        assert name not in conn.call(201, stype=stype).json()["subscriptionGroupTable"]
    conn.call(200, body=b'{"groupName":"SG_X","retryQueueNums":4096}', want=SYSTEM_ERROR,
              remark='"retryQueueNums" = 4096 is outside 0..1024')

    # deleteSubGroup: gone, and pulls say so again
    r = mqadmin(s, "deleteSubGroup", "-b", m.addr, "-g", GROUP)
    assert r.stdout == f"delete subscription group [{GROUP}] from broker [{m.addr}] success.\n"
    assert GROUP not in groups(s, m.addr)
    pull(conn, TOPIC, 0, 0, group=GROUP, want=NOT_EXIST)
    r = mqadmin(s, "deleteSubGroup", "-b", m.addr, "-g", GROUP, check=False)
    assert r.returncode == 1 and f"subscription group '{GROUP}' does not exist" in r.stderr, r
    wait_for(lambda: GROUP not in groups(s, sl.addr), 30 * slow(args),
             "the slave to drop the group", interval_s=0.1)

    # a whole cluster (its masters): create, then delete with its retry and DLQ topics
    r = mqadmin(s, "updateSubGroup", "-c", "DefaultCluster", "-g", "SG_C", "-q", "2", "-r", "0")
    assert r.stdout.splitlines()[0] == f"create subscription group to {m.addr} success.", r
    assert groups(s, m.addr)["SG_C"]["retryQueueNums"] == "2"
    send_back(conn, phys, group="SG_C")  # makes %DLQ%SG_C
    assert max_offset(conn, "%DLQ%SG_C") == 1
    r = mqadmin(s, "deleteSubGroup", "-c", "DefaultCluster", "-g", "SG_C")
    assert r.stdout.splitlines() == [
        f"delete subscription group [SG_C] from broker [{m.addr}] in cluster [DefaultCluster] "
        "success.",
        "delete topic [%DLQ%SG_C] from cluster [DefaultCluster] success."], r.stdout
    assert "SG_C" not in groups(s, m.addr) and max_offset(conn, "%DLQ%SG_C") is None
    r = mqadmin(s, "deleteSubGroup", "-c", "DefaultCluster", "-g", "SG_C", check=False)
    assert r.returncode == 1 and "does not exist in cluster DefaultCluster" in r.stderr, r
    conn.close()

    # mqadmin's checks: usage errors (2) before connecting, the broker's (1) after
    for argv, text in [
            (["updateSubGroup", "-b", m.addr], "-g GROUP is required"),
            (["updateSubGroup", "-g", "G"], "exactly one of -b BROKERADDR and -c CLUSTER"),
            (["updateSubGroup", "-b", m.addr, "-g", "G", "-q", "2000"], "-q (retryQueueNums)"),
            (["updateSubGroup", "-b", m.addr, "-g", "G", "-r", "-1"], "-r (retryMaxTimes)"),
            (["updateSubGroup", "-b", m.addr, "-g", "G", "-s", "yes"], "-s (consumeEnable)"),
            (["updateSubGroup", "-b", m.addr, "-g", "G", "-w", "x"],
             "-w (whichBrokerWhenConsumeSlowly)"),
            (["deleteSubGroup", "-b", m.addr, "-g", "G", "-r", "1"], "-r (removeOffset)"),
            (["subGroupList"], "-b BROKERADDR is required")]:
        r = mqadmin(s, *argv, check=False)
        assert r.returncode == 2 and text in r.stderr, (argv, r)
    r = mqadmin(s, "updateSubGroup", "-b", m.addr, "-g", "bad name!", check=False)
    assert r.returncode == 1 and "illegal characters" in r.stderr and not r.stdout, r
    for sub in ("updateSubGroup", "deleteSubGroup", "subGroupList"):
        r = mqadmin(s, sub, "-h")
        assert r.stdout.startswith(f"usage: mqadmin {sub} "), r
    s.stop()


if __name__ == "__main__":
    main([test_subscription_groups])
