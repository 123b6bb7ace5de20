"""The kill-master drill in the suite (issue: HA, acceptance 2 and 6).

Runs scripts/failover_drill.py: a SYNC_MASTER and its slave, a producer at a
steady rate, the master killed with SIGKILL several times at different
moments (each time restarted), a consumer group reading throughout.

- In network-namespace mode (two hosts joined by a veth pair) whenever
  namespaces can be created here, ten kills; the report must say so.
- In loopback mode too (the fallback must not rot), three kills.

The report is not taken on trust: the test rebuilds it from the raw tool
outputs the drill leaves behind (producer.out: mqproduce's status per line
in input order, consumer.out: consumed bodies) and checks that every SEND_OK
message was consumed, that the master took sends again after every
restart, and that the namespaces are gone afterwards.
"""
import json
import os
import subprocess
import sys

from harness import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from failover_drill import Hosts  # noqa: E402

LOOPBACK_BASE_PORT = 23100  # this test's fixed ports: 23100-23103


def run_drill(args, net, kills, name):
    out_dir = os.path.join(args.tmp, name)
    argv = [sys.executable, os.path.join(ROOT, "scripts", "failover_drill.py"),
            "--bin", args.bin, "--dir", out_dir, "--net", net, "--tag", "drilltest",
            "--base-port", str(LOOPBACK_BASE_PORT),
            "--kills", str(kills), "--down-seconds", "1.5", "--up-seconds", "3",
            "--rate", "100", "--seconds", "5", "--drain-seconds", "60"]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, f"drill failed:\n{r.stdout}\n{r.stderr[-4000:]}"
    report = json.loads(r.stdout)
    check_report(report, out_dir, kills)
    return report


def check_report(report, out_dir, kills):
    with open(os.path.join(out_dir, "producer.out")) as f:
        statuses = [l.split()[0] for l in f.read().splitlines()]
    with open(os.path.join(out_dir, "consumer.out")) as f:
        bodies = f.read().splitlines()
    assert len(statuses) == report["sent"], (len(statuses), report)
    acked = {f"drill-{i}" for i, s in enumerate(statuses) if s == "SEND_OK"}
    consumed = set(bodies)
    lost = acked - consumed
    assert not lost, f"{len(lost)} acknowledged messages never consumed, e.g. {sorted(lost)[:10]}"
    assert consumed <= {f"drill-{i}" for i in range(len(statuses))}, "consumed a message never sent"
    assert report["lost"] == 0 and report["acknowledged"] == len(acked), report
    assert report["consumed"] == len(consumed), report
    assert report["duplicates"] == len(bodies) - len(consumed), report
    assert report["master_kills"] == kills, report
    # The master is up about 2/3 of the time and a restarted master waits
    # for its slave (SLAVE_NOT_AVAILABLE meanwhile): a floor well below that ...
    assert len(acked) > report["sent"] // 4, report
    # ... and the restarted master took sends again after every restart.
    each = report["master_serving_again_each_s"]
    assert len(each) == kills and all(t is not None for t in each), report


def test_drill_netns_ten_kills_lose_nothing(args):
    if not Hosts.netns_available():
        print("network namespaces unavailable here (not root, or `ip netns add` fails): "
              "netns drill not run", flush=True)
        return
    report = run_drill(args, "netns", 10, "drill-netns")
    assert report["mode"] == "netns", report
    names = {v.split()[0] for v in report["hosts"].values()}
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not names & {l.split()[0] for l in left.splitlines() if l.split()}, \
        f"namespaces left behind: {left}"


def test_drill_loopback_three_kills_lose_nothing(args):
    report = run_drill(args, "loopback", 3, "drill-loopback")
    assert report["mode"] == "loopback", report


if __name__ == "__main__":
    main([test_drill_netns_ten_kills_lose_nothing, test_drill_loopback_three_kills_lose_nothing])
