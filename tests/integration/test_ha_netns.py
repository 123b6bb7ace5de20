"""The HA link cut between two real hosts (issue: HA, acceptance 4).

Two network namespaces joined by a veth pair (scripts/failover_drill.py's
Hosts): host A (10.77.0.1) runs the name server, the SYNC_MASTER and the
clients, host B (10.77.0.2) the slave. The link is cut twice:

1. an nftables rule on host A drops every packet to or from the HA port (the
   replication link only; the slave still reaches the name server);
2. the veth pair goes down (host B is cut off entirely).

Each time the master must answer every send with SLAVE_NOT_AVAILABLE or
FLUSH_SLAVE_TIMEOUT within its timeouts (the client's 5 s timeout never
fires: no SEND_FAILED), drop the dead session within haHousekeepingInterval
(SLAVE_NOT_AVAILABLE, no slave in brokerStatus), and answer SEND_OK again by
itself once the link heals. At the end every SEND_OK message is consumed and
the slave's log ends where the master's does.

Exits 77 (skipped) only when network namespaces cannot be created here (not
root, or `ip netns add` fails). nft comes from scripts/install-deps.sh.
"""
import os
import shutil
import sys
import time
import types

from harness import fresh_dir, main, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from failover_drill import Cluster, Hosts  # noqa: E402

SLAVE_TIMEOUT_MS = 1000
HOUSEKEEPING_MS = 2000   # failover_drill.Cluster's haHousekeepingInterval
CLIENT_TIMEOUT_MS = 5000
STORED_MASTER_ONLY = {"SLAVE_NOT_AVAILABLE", "FLUSH_SLAVE_TIMEOUT"}


class Sender:
    """mqproduce on host A, one message at a time; remembers what was SEND_OK."""

    def __init__(self, c):
        self.c = c
        self.acked = set()

    def send(self, lines):
        r = self.c.tool("mqproduce", "-n", self.c.ns, "-t", "LinkCut", "--inflight", "1",
                        "--timeout-ms", str(CLIENT_TIMEOUT_MS), host="a", check=False,
                        input="".join(f"{l}\n" for l in lines), timeout=120)
        statuses = [l.split()[0] for l in r.stdout.splitlines()]
        assert len(statuses) == len(lines), f"{r.stdout}\n{r.stderr}"
        self.acked |= {l for l, s in zip(lines, statuses) if s == "SEND_OK"}
        return statuses


def master_slaves(c):
    return int(c.broker_status(c.master_addr, "a", "haStatus").get("slaves", "-1") or -1)


def cut_and_heal(c, sender, name, cut, heal):
    cut()
    try:
        lines = [f"{name}-cut-{i}" for i in range(8)]
        start = time.monotonic()
        statuses = sender.send(lines)
        took = time.monotonic() - start
        # Every send answered by the master, none acknowledged by the cut-off slave.
        assert set(statuses) <= STORED_MASTER_ONLY, f"{name}: {statuses}"
        # One slaveTimeout per send at most (plus slack for the tools), far
        # below the client's own timeout.
        assert took < len(lines) * (SLAVE_TIMEOUT_MS / 1000 + 1), f"{name}: {took:.1f}s for {statuses}"
        # The master drops the silent session within haHousekeepingInterval.
        wait_for(lambda: master_slaves(c) == 0, HOUSEKEEPING_MS / 1000 + 10,
                 f"{name}: the master to drop the dead slave session")
        assert sender.send([f"{name}-detached"]) == ["SLAVE_NOT_AVAILABLE"]
    finally:
        heal()
    # It recovers by itself: the slave reconnects and catches up.
    n = [0]

    def healed():
        n[0] += 1
        return sender.send([f"{name}-healed-{n[0]}"]) == ["SEND_OK"]
    wait_for(healed, 30, f"{name}: SEND_OK again after the link healed", 0.2)
    more = [f"{name}-after-{i}" for i in range(20)]
    assert sender.send(more) == ["SEND_OK"] * 20


def test_ha_link_cut_netns(args):
    hosts = Hosts("netns", "hanetns")
    hosts.setup()
    try:
        d = fresh_dir(args.tmp, "ha-netns")
        c = Cluster(types.SimpleNamespace(bin=args.bin, dir=d, base_port=0), hosts)
        try:
            c.start(extra_master=["-o", f"slaveTimeout={SLAVE_TIMEOUT_MS}"])
            c.create_topic("LinkCut", queues=2, host="a")
            sender = Sender(c)
            wait_for(lambda: sender.send(["warmup"]) == ["SEND_OK"], 30, "SEND_OK with the slave", 0.2)
            cut_and_heal(c, sender, "rule", lambda: hosts.cut_port("a", c.ha_port),
                         lambda: hosts.heal_port("a"))
            cut_and_heal(c, sender, "linkdown", lambda: hosts.set_link(False),
                         lambda: hosts.set_link(True))
            # Nothing acknowledged is lost.
            r = c.tool("mqconsume", "-n", c.ns, "-t", "LinkCut", "-g", "LinkCutGroup", "--from", "first",
                       "--format", "body", "--idle-exit-ms", "5000", host="a", timeout=120)
            got = set(r.stdout.split())
            missing = sender.acked - got
            assert not missing, f"acknowledged but not consumed: {sorted(missing)}"
            # The slave holds the master's whole log again (master-only records too).
            def same_end():
                m = c.broker_status(c.master_addr, "a", "haStatus").get("logEnd")
                return m is not None and m == c.broker_status(c.slave_addr, "a", "haStatus").get("logEnd")
            wait_for(same_end, 30, "the slave's log to end where the master's does", 0.2)
        finally:
            c.stop()
    finally:
        hosts.cleanup()
    left = {l.split()[0] for l in os.popen("ip netns list").read().splitlines() if l.split()}
    assert not set(hosts.ns.values()) & left, f"namespaces left behind: {left}"


if __name__ == "__main__":
    if not Hosts.netns_available():
        print("skipped: network namespaces cannot be created here (needs root and `ip netns add`)")
        sys.exit(77)
    if not shutil.which("nft"):
        print("nft not found: run scripts/install-deps.sh (package nftables)")
        sys.exit(1)
    main([test_ha_link_cut_netns])
