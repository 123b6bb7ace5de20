"""Deleted consumer offsets stay deleted on a master and its slave
(docs/OPERATIONS.md, "Consumer groups"; the tombstones of
src/broker/offsets.h).

The slave and the master exchange consumer offsets every
slaveSyncMetadataInterval (300 ms here), the larger value per queue
winning. Real processes (test_ha_e2e's Pair: a name server, a SYNC_MASTER
and its SLAVE, all on port 0):

- a group consumes, so both brokers hold its offsets; `mqadmin
  deleteSubGroup -r true` on the master: the slave drops its copy, and after
  several more exchanges neither broker has the offsets back;
- the same for `mqadmin deleteTopic` (that topic's offsets, of every group;
  the group's other topics keep theirs); the topic recreated, a commit on
  the slave reaches the master and one on the master reaches the slave;
- the master deletes a group while the slave is frozen (SIGSTOP), so the
  slave still holds the offsets, and is killed (SIGKILL) once the deletion
  is in its file; while it is down a consumer commits to the slave. After
  the master restarts, it adopts the offsets committed on the slave, and
  the deleted ones do not come back.

Offsets are read from each broker with RocketMQ's GET_CONSUME_STATS (208);
exchanges are counted by the slave's brokerStatus metadataSyncs, so "several
exchanges later" is a condition, not a sleep.
"""
import os
import re
import signal

from harness import main, wait_for
from test_ha_e2e import Pair, produce
from test_rocketmq_wire import Conn

SYNCS_AFTER = 5  # exchanges to wait, once the slave dropped the offsets
STAT_RX = re.compile(r'"queueId":(\d+),"topic":"([^"]+)"\}:\{"brokerOffset":-?\d+,'
                     r'"consumerOffset":(-?\d+)')


def offsets(port, group):
    """{(topic, queue id): offset} that the broker on port holds for group."""
    c = Conn(f"127.0.0.1:{port}")
    try:
        body = c.call(208, {"consumerGroup": group}).body.decode()
    finally:
        c.close()
    return {(t, int(q)): int(o) for q, t, o in STAT_RX.findall(body)}


def commit(port, group, topic, qid, offset):
    """UPDATE_CONSUMER_OFFSET (15), as a RocketMQ consumer commits."""
    c = Conn(f"127.0.0.1:{port}")
    try:
        c.call(15, {"consumerGroup": group, "topic": topic, "queueId": str(qid),
                    "commitOffset": str(offset)})
    finally:
        c.close()


def syncs(pair):
    r = pair.tool("mqadmin", "brokerStatus", "-n", pair.ns, "-b", f"127.0.0.1:{pair.s_port}")
    m = re.search(r"^metadataSyncs\s*:\s*(\d+)$", r.stdout, re.M)
    assert m, r.stdout
    return int(m.group(1))


def wait_syncs(pair, n):
    """Waits until the slave completed n more metadata exchanges with the master."""
    start = syncs(pair)
    wait_for(lambda: syncs(pair) >= start + n, 30, f"{n} metadata exchanges", interval_s=0.1)


def admin(pair, *argv):
    return pair.tool("mqadmin", argv[0], "-n", pair.ns, "-b", f"127.0.0.1:{pair.m_port}",
                     *argv[1:])


def consume(pair, topic, group, n):
    """Consumes topic's n messages in group; mqconsume commits on exit."""
    r = pair.tool("mqconsume", "-n", pair.ns, "-t", topic, "-g", group, "--from", "first",
                  "--format", "body", "--max", str(n), "--idle-exit-ms", "10000", timeout=120)
    assert len(r.stdout.split()) == n, r.stdout + r.stderr[-2000:]


def fill(pair, topic, n):
    pair.create_topic(topic)
    wait_for(lambda: produce(pair, topic, [f"{topic}-warm"])[0] == "SEND_OK", 30,
             "SEND_OK with the slave attached")
    assert produce(pair, topic, [f"{topic}-{i}" for i in range(n - 1)]).count("SEND_OK") == n - 1


def on_both(pair, group, want):
    """Waits until master and slave both hold want for group (offsets at the queue ends)."""
    def same():
        m, s = offsets(pair.m_port, group), offsets(pair.s_port, group)
        return m == s == want or None
    wait_for(same, 30, f"{group}'s offsets {want} on master and slave", interval_s=0.1)


def stays_gone(pair, group, gone, kept=None):
    """After a deletion on the master: the slave drops the keys in gone,
    and after SYNCS_AFTER more exchanges neither broker has them back."""
    kept = kept or {}

    def dropped():
        have = offsets(pair.m_port, group)
        assert not set(have) & set(gone), f"master has deleted offsets back: {have}"
        return not set(offsets(pair.s_port, group)) & set(gone)
    wait_for(dropped, 30, f"the slave to drop {group}'s deleted offsets", interval_s=0.1)
    wait_syncs(pair, SYNCS_AFTER)
    for who, port in (("master", pair.m_port), ("slave", pair.s_port)):
        have = offsets(port, group)
        assert not set(have) & set(gone), f"{who} has deleted offsets back: {have}"
        assert have == kept, f"{who}: {have}, want {kept}"


def test_deleted_group_offsets_stay_deleted(args):
    pair = Pair(args, "offdel-group")
    try:
        fill(pair, "DelGroupT", 20)
        consume(pair, "DelGroupT", "DelG", 20)
        ends = offsets(pair.m_port, "DelG")
        assert sorted(ends) == [("DelGroupT", 0), ("DelGroupT", 1)], ends
        assert sum(ends.values()) == 20, ends
        on_both(pair, "DelG", ends)
        r = admin(pair, "deleteSubGroup", "-g", "DelG", "-r", "true")
        assert "success" in r.stdout, r.stdout
        assert offsets(pair.m_port, "DelG") == {}
        stays_gone(pair, "DelG", ends)
    finally:
        pair.stop()


def test_deleted_topic_offsets_stay_deleted(args):
    pair = Pair(args, "offdel-topic")
    try:
        fill(pair, "DelTopicA", 10)
        fill(pair, "DelTopicB", 10)
        consume(pair, "DelTopicA", "DelTG", 10)
        consume(pair, "DelTopicB", "DelTG", 10)
        ends = offsets(pair.m_port, "DelTG")
        assert len(ends) == 4, ends
        on_both(pair, "DelTG", ends)
        r = admin(pair, "deleteTopic", "-t", "DelTopicB")
        assert "success" in r.stdout, r.stdout
        kept = {k: v for k, v in ends.items() if k[0] == "DelTopicA"}
        gone = {k: v for k, v in ends.items() if k[0] == "DelTopicB"}
        assert offsets(pair.m_port, "DelTG") == kept
        stays_gone(pair, "DelTG", gone, kept)

        # recreated: commits made after the deletion merge both ways again
        pair.create_topic("DelTopicB")
        commit(pair.s_port, "DelTG", "DelTopicB", 0, 1)
        want = dict(kept)
        want[("DelTopicB", 0)] = 1
        wait_for(lambda: offsets(pair.m_port, "DelTG") == want, 30,
                 "the master to adopt a commit made on the slave after the deletion",
                 interval_s=0.1)
        commit(pair.m_port, "DelTG", "DelTopicB", 1, 2)
        want[("DelTopicB", 1)] = 2
        on_both(pair, "DelTG", want)
    finally:
        pair.stop()


def test_master_restart_keeps_deletion_and_adopts_slave_commits(args):
    pair = Pair(args, "offdel-restart")
    offsets_file = os.path.join(pair.dir, "master", "config", "consumerOffset.json")
    try:
        fill(pair, "DelRestartT", 10)
        consume(pair, "DelRestartT", "GoneG", 10)
        consume(pair, "DelRestartT", "KeepG", 10)
        gone, keep = offsets(pair.m_port, "GoneG"), offsets(pair.m_port, "KeepG")
        on_both(pair, "GoneG", gone)
        on_both(pair, "KeepG", keep)

        # deleted while the slave cannot hear of it; the master crashes once
        # the deletion is on disk (it is saved at once, not at the next tick)
        slave = pair.procs["slave"]
        slave.send_signal(signal.SIGSTOP)
        admin(pair, "deleteSubGroup", "-g", "GoneG", "-r", "true")

        def saved():
            try:
                with open(offsets_file) as f:
                    return '"GoneG"' in f.read()
            except FileNotFoundError:
                return False
        wait_for(saved, 30, "the master to save the deletion", interval_s=0.05)
        master = pair.procs["master"]
        master.send_signal(signal.SIGKILL)
        master.wait(timeout=60)
        slave.send_signal(signal.SIGCONT)

        # while the master is down, a consumer commits to the slave
        moved = {k: v + 100 for k, v in keep.items()}
        for (topic, qid), off in moved.items():
            commit(pair.s_port, "KeepG", topic, qid, off)
        assert offsets(pair.s_port, "KeepG") == moved
        assert offsets(pair.s_port, "GoneG") == gone  # not told of the deletion yet

        pair.m_port = pair._start("master", pair._broker("master", True))
        wait_for(lambda: offsets(pair.m_port, "KeepG") == moved, 60,
                 "the restarted master to adopt the offsets committed on the slave",
                 interval_s=0.1)
        stays_gone(pair, "GoneG", gone)
        assert offsets(pair.m_port, "KeepG") == moved
    finally:
        pair.stop()


if __name__ == "__main__":
    main([test_deleted_group_offsets_stay_deleted, test_deleted_topic_offsets_stay_deleted,
          test_master_restart_keeps_deletion_and_adopts_slave_commits])
