"""brokerPermission: the whole broker's read and write bits.

A name server and two masters, perm-a (brokerPermission 6) and perm-b, which
restarts with 4 (read-only), 2 (write-only) and 6 again. The routes the name
server gives out carry each topic's perm masked by its broker's, so
producers and consumers route around the broker; and the broker itself
refuses what its permission lacks, to a client that asks it directly (raw
RocketMQ requests, as a client with a stale route would send them), with
NO_PERMISSION and a remark naming the broker and the key. A message
accepted while the broker was write-only is there once it is readable again.
"""
import json

from harness import main, wait_for
from test_broker_e2e import Broker, Cluster, mqadmin, produce, slow
from test_rocketmq_wire import Conn, pull, send_v2

TOPIC = "PermTopic"
NO_PERMISSION, PULL_NOT_FOUND = 16, 19


def restart(c, b, perm):
    assert b.proc.stop(30 * slow(c.args)) == 0, b.proc.describe()
    b.extra = [f"brokerPermission={perm}"]
    b.start()
    c.wait_registered()


def wait_perms(c, want):
    """Waits until the route of TOPIC has perm want[brokerName] for each broker."""
    def seen():
        r = mqadmin(c, "topicRoute", "-t", TOPIC, check=False)
        if r.returncode != 0:
            return False
        return {q["brokerName"]: q["perm"] for q in json.loads(r.stdout)["queueDatas"]} == want
    wait_for(seen, 30 * slow(c.args), f"route perms {want}", interval_s=0.1)


def test_broker_permission(args):
    c = Cluster(args, "perm", 1)
    a = c.brokers[0]
    b = Broker(args, c.dir, "perm-b", c.ns.addr, ["brokerPermission=4"])
    c.brokers.append(b)
    c.wait_registered()
    for br in c.brokers:
        mqadmin(c, "updateTopic", "-b", br.addr, "-t", TOPIC, "-r", "2", "-w", "2")

    # read-only: the route says so, producers go elsewhere, direct sends are refused
    wait_perms(c, {a.name: 6, b.name: 4})
    _, results, _ = produce(c, TOPIC, [f"m{i}" for i in range(100)])
    assert {r.broker for r in results} == {a.name}, results[:5]
    conn = Conn(b.addr)
    send_v2(conn, TOPIC, 0, b"refused", "T", "K", want=NO_PERMISSION)
    pull(conn, TOPIC, 0, 0, want=PULL_NOT_FOUND)
    r = send_v2(conn, TOPIC, 1, b"refused", "T", "K", want=NO_PERMISSION)[0]
    assert "perm-b is not writable (brokerPermission=4)" in r.remark, r
    conn.close()

    # write-only: sends are accepted, pulls refused
    restart(c, b, 2)
    wait_perms(c, {a.name: 6, b.name: 2})
    conn = Conn(b.addr)
    send_v2(conn, TOPIC, 0, b"kept", "T", "K")
    r = pull(conn, TOPIC, 0, 0, want=NO_PERMISSION)
    assert "perm-b is not readable (brokerPermission=2)" in r.remark, r
    conn.close()

    # readable again: the message sent while write-only is there
    restart(c, b, 6)
    wait_perms(c, {a.name: 6, b.name: 6})
    conn = Conn(b.addr)
    r = pull(conn, TOPIC, 0, 0)
    assert b"kept" in r.body, r
    conn.close()
    for br in c.brokers:
        assert br.proc.stop(30 * slow(args)) == 0, br.proc.describe()
    assert c.ns.proc.stop(30) == 0, c.ns.proc.describe()


if __name__ == "__main__":
    main([test_broker_permission])
