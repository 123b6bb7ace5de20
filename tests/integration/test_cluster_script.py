"""scripts/cluster.sh, the quickstart's cluster, says when a start failed.

A second cluster started from another folder while the first holds the
quickstart ports must fail with a clear message instead of reporting three
processes started (it used to: its port checks found the first cluster
listening). A master that dies while starting (its HA port taken) makes
start fail with the end of its log. Start on a running cluster is still a
no-op that succeeds.

The script uses the quickstart's fixed ports (9876, 10911, 10912, 10921);
when any of them is in use here (a developer's own quickstart cluster),
the test is skipped (exit 77) rather than disturb it.
"""
import os
import shutil
import socket
import subprocess
import sys

from harness import fresh_dir, main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "cluster.sh")
PORTS = (9876, 10911, 10912, 10921)


def in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cluster(args, cmd, d):
    env = dict(os.environ, FERRY_BIN=os.path.abspath(args.bin))
    return subprocess.run(["bash", SCRIPT, cmd, d], capture_output=True, text=True, timeout=60,
                          env=env)


def test_failed_starts_say_so(args):
    a = fresh_dir(args.tmp, "cluster-a")
    b = fresh_dir(args.tmp, "cluster-b")
    c = fresh_dir(args.tmp, "cluster-c")
    try:
        r = cluster(args, "start", a)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert r.stdout.count("started") == 3, r.stdout

        r = cluster(args, "start", a)  # idempotent
        assert r.returncode == 0 and r.stdout.count("already running") == 3, (r.stdout, r.stderr)

        r = cluster(args, "start", b)  # the ports belong to cluster a
        assert r.returncode != 0, (r.stdout, r.stderr)
        assert "port 9876 is in use" in r.stderr, r.stderr
        assert "started" not in r.stdout, r.stdout
        status = cluster(args, "status", b).stdout
        assert status.count("stopped") == 3, status

        r = cluster(args, "stop", a)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert not any(in_use(p) for p in PORTS), "cluster a still listens after stop"
        for store in ("broker-a", "broker-a-s"):  # 2 GiB each (1 GiB segments); logs stay
            shutil.rmtree(os.path.join(a, store))

        with socket.socket() as squat:  # the master's HA port taken
            squat.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squat.bind(("127.0.0.1", 10912))
            squat.listen()
            r = cluster(args, "start", c)
        assert r.returncode != 0, (r.stdout, r.stderr)
        assert "port 10912 is in use by another process, so broker-a cannot start" in r.stderr, \
            r.stderr
        assert "broker-a started" not in r.stdout, r.stdout
        cluster(args, "stop", c)

        with open(os.path.join(c, "broker-a"), "w"):  # a file where its store should be
            pass
        r = cluster(args, "start", c)
        assert r.returncode != 0, (r.stdout, r.stderr)
        assert "broker-a exited while starting" in r.stderr, r.stderr
        assert "cannot open the store" in r.stderr, r.stderr  # the end of its log says why
    finally:
        for d in (a, b, c):
            cluster(args, "stop", d)


if __name__ == "__main__":
    if any(in_use(p) for p in PORTS):
        print("skipped: a quickstart port is in use here", flush=True)
        sys.exit(77)
    main([test_failed_starts_say_so])
