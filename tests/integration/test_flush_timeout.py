"""FLUSH_DISK_TIMEOUT through the real processes and tools.

A SYNC_FLUSH broker whose every fdatasync completes 600 ms late (the
test-only environment variable FERRY_TEST_FDATASYNC_DELAY_MS, which holds
fy_aio's fdatasync completions back) and syncFlushTimeout=100: mqproduce
prints FLUSH_DISK_TIMEOUT for each line, with its message id and queue
offset (stored), and exits 1 (not SEND_OK); mqadmin brokerStatus counts the
answers (sendFlushDiskTimeouts); mqconsume reads every message. The broker
restarted without the delay answers SEND_OK, and the earlier messages are
still there after the restart (the late fdatasyncs completed). The delay
makes every fdatasync late, so every answer is FLUSH_DISK_TIMEOUT, whatever
the machine's speed.

Unit tests (test_broker, test_broker_rmq, test_ha, test_commitlog) cover
the timing, the single answer and SYNC_MASTER; this one covers the tools.
"""
import os

from harness import main
from test_broker_e2e import (Cluster, Consumer, broker_status, create_topic, mqadmin,
                             produce, slow)

DELAY_ENV = "FERRY_TEST_FDATASYNC_DELAY_MS"


def test_flush_disk_timeout_through_the_tools(args):
    os.environ[DELAY_ENV] = "600"
    try:
        c = Cluster(args, "flushto", 1, ["flushDiskType=SYNC_FLUSH", "syncFlushTimeout=100"])
    finally:
        del os.environ[DELAY_ENV]
    b = c.brokers[0]
    topic = "FlushTimeout"
    create_topic(c, topic, queues=1)

    lines = [f"late-{i}" for i in range(5)]
    rc, results, stderr = produce(c, topic, lines, check=False)
    assert rc == 1, (rc, stderr[-2000:])  # stored, but not SEND_OK
    assert len(results) == len(lines), results
    for r in results:
        assert r.status == "FLUSH_DISK_TIMEOUT", results
        assert len(r.msgid) == 32 and r.broker == b.name and r.offset != "-", r
    assert sorted(int(r.offset) for r in results) == list(range(len(lines))), results
    st = broker_status(mqadmin(c, "brokerStatus", "-b", b.addr).stdout)
    assert int(st["sendFlushDiskTimeouts"]) == len(lines), st
    log = b.proc.stderr_text() + "\n".join(b.proc.lines())
    assert DELAY_ENV in log, "the broker must say it runs with a test-only delay"

    cons = Consumer(c, "late", topic, "G_LATE", "--from", "first", "--max", str(len(lines)),
                    "--idle-exit-ms", str(20000 * slow(args)))
    assert sorted(m["body"] for m in cons.finish(60 * slow(args))) == sorted(lines)

    # Restarted without the delay (and with a timeout no real fdatasync
    # reaches): SEND_OK again, and nothing was lost.
    assert b.proc.stop(30 * slow(args)) == 0, b.proc.describe()
    b.extra = [kv for kv in b.extra if not kv.startswith("syncFlushTimeout=")]
    b.extra.append("syncFlushTimeout=60000")
    b.start()
    c.wait_registered()
    more = [f"on-time-{i}" for i in range(3)]
    produce(c, topic, more)  # checks every line is SEND_OK
    cons = Consumer(c, "all", topic, "G_ALL", "--from", "first", "--max",
                    str(len(lines) + len(more)), "--idle-exit-ms", str(20000 * slow(args)))
    assert sorted(m["body"] for m in cons.finish(60 * slow(args))) == sorted(lines + more)
    assert b.proc.stop(30 * slow(args)) == 0, b.proc.describe()
    c.ns.proc.stop()


if __name__ == "__main__":
    main([test_flush_disk_timeout_through_the_tools])
