"""The kill-master drill in the suite (issue: HA, acceptance 2 and 6).

Runs scripts/failover_drill.py: a SYNC_MASTER and its slave, a producer at a
steady rate, the master killed with SIGKILL ten times at different moments
(each time restarted), a consumer group reading throughout. Every SEND_OK
message must be consumed: lost == 0.
"""
import json
import os
import subprocess
import sys

from harness import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_drill_ten_kills_lose_nothing(args):
    out_dir = os.path.join(args.tmp, "drill")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "failover_drill.py"),
                        "--bin", args.bin, "--dir", out_dir, "--base-port", "29876",
                        # up-seconds exceeds the client's 5 s down-marking of a
                        # broker it failed to reach, so every cycle has sends
                        "--kills", "10", "--down-seconds", "1.5", "--up-seconds", "6",
                        "--rate", "100", "--seconds", "5", "--drain-seconds", "60"],
                       cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, f"drill failed:\n{r.stdout}\n{r.stderr[-4000:]}"
    report = json.loads(r.stdout)
    assert report["lost"] == 0, report
    assert report["master_kills"] == 10, report
    assert report["acknowledged"] > 500, report
    assert report["consumed"] >= report["acknowledged"], report


if __name__ == "__main__":
    main([test_drill_ten_kills_lose_nothing])
