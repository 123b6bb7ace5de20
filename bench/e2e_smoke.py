"""Smoke test of ferry-bench (ctest bench/e2e_smoke): keeps the end-to-end
benchmark from rotting, in a few seconds.

Starts mqnamesrv and one mqbroker on port 0 in a scratch directory, creates a
topic, and runs ferry-bench as bench/e2e_bench.sh does: a one-second closed
loop of single sends, a batched run, an open-loop run at a fixed rate, then a
consume of the backlog. Each run's last stdout line must be a RESULT line
that parses, with msgs > 0 and errors = 0; the consumer must read at least
what the first producer run counted.

    python3 bench/e2e_smoke.py --bin build/bin --tmp build/test-tmp
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from harness import Proc, fresh_dir, main, run, wait_for  # noqa: E402

RESULT_KEYS = ["mode", "msgs", "errors", "secs", "msgs_per_s", "mb_per_s", "p50_us", "p99_us",
               "p999_us", "max_us"]


def listen_port(proc, what, pattern):
    rx = re.compile(pattern)

    def find():
        for line in proc.lines():
            m = rx.match(line)
            if m:
                return int(m.group(1))
        if proc.p.poll() is not None:
            raise AssertionError(f"{what} exited:\n{proc.stderr_text()[-2000:]}")
        return None
    return wait_for(find, 30, f"{what} to print its port", interval_s=0.02)


def parse_result(stdout):
    """The RESULT line, which must be the last line of stdout, as a dict."""
    lines = stdout.strip().splitlines()
    assert lines, "ferry-bench printed nothing on stdout"
    last = lines[-1].split()
    assert last[0] == "RESULT", f"last stdout line is not RESULT: {lines[-1]!r}"
    kv = dict(f.split("=", 1) for f in last[1:])
    assert list(kv) == RESULT_KEYS, f"RESULT keys {list(kv)} != {RESULT_KEYS}"
    out = {"mode": kv["mode"]}
    for k in RESULT_KEYS[1:]:
        out[k] = float(kv[k]) if k in ("secs", "msgs_per_s", "mb_per_s") else int(kv[k])
    return out


def test_e2e_smoke(args):
    d = fresh_dir(args.tmp, "e2e_smoke")
    procs = []
    try:
        ns = Proc([os.path.join(args.bin, "mqnamesrv"), "-o", "listenPort=0",
                   "-o", "listenAddress=127.0.0.1"], os.path.join(d, "namesrv.out"))
        procs.append(ns)
        ns_addr = "127.0.0.1:%d" % listen_port(ns, "mqnamesrv",
                                                r"^mqnamesrv listening on port (\d+)$")
        conf = ["storePathRootDir=" + os.path.join(d, "store"), "listenPort=0",
                "haListenPort=0", "brokerIP1=127.0.0.1", "listenAddress=127.0.0.1",
                "brokerName=smoke-a", "namesrvAddr=" + ns_addr, "registerNameServerPeriod=1000",
                "mappedFileSizeCommitLog=67108864", "mappedFileSizeConsumeQueue=1000000",
                "maxHashSlotNum=50000", "maxIndexNum=400000", "autoCreateTopicEnable=false"]
        argv = [os.path.join(args.bin, "mqbroker")]
        for kv in conf:
            argv += ["-o", kv]
        broker = Proc(argv, os.path.join(d, "broker.out"))
        procs.append(broker)
        addr = "127.0.0.1:%d" % listen_port(broker, "mqbroker",
                                             r"^mqbroker listening on port (\d+)$")
        admin = os.path.join(args.bin, "mqadmin")
        run([admin, "updateTopic", "-n", ns_addr, "-b", addr, "-t", "BenchSmoke", "-r", "4",
             "-w", "4"])

        def routed():
            r = run([admin, "topicRoute", "-n", ns_addr, "-t", "BenchSmoke"], check=False)
            return r.returncode == 0 and "smoke-a" in r.stdout
        wait_for(routed, 30, "the topic's route", interval_s=0.1)

        bench = os.path.join(args.bin, "ferry-bench")
        base = [bench, "produce", "-n", ns_addr, "-t", "BenchSmoke", "--duration-s", "1",
                "--warmup-s", "0.2"]
        runs = {
            "single": base + ["--inflight", "256"],
            "batch": base + ["--batch", "16", "--inflight", "512", "--size", "1024"],
            "open loop": base + ["--rate", "2000", "--inflight", "256", "--queue-id", "1"],
        }
        first = None
        for name, cmd in runs.items():
            r = run(cmd, timeout_s=60)
            res = parse_result(r.stdout)
            assert res["mode"] == "produce", res
            assert res["msgs"] > 0 and res["errors"] == 0, f"{name}: {res}\n{r.stderr}"
            assert res["p50_us"] <= res["p99_us"] <= res["p999_us"] <= res["max_us"], res
            assert res["max_us"] > 0, res
            assert "msgs/s" in r.stderr, f"{name}: no progress line on stderr:\n{r.stderr}"
            first = first or res

        r = run([bench, "consume", "-n", ns_addr, "-t", "BenchSmoke", "-g", "smoke",
                 "--from", "first", "--count", str(first["msgs"]), "--duration-s", "30"],
                timeout_s=60)
        res = parse_result(r.stdout)
        assert res["mode"] == "consume", res
        assert res["errors"] == 0, f"{res}\n{r.stderr}"
        assert res["msgs"] >= first["msgs"], f"consumed {res['msgs']} < {first['msgs']}"

        # Usage errors exit 2 and name the problem.
        r = run([bench, "produce", "-n", ns_addr, "-t", "BenchSmoke", "--batch", "0"],
                check=False)
        assert r.returncode == 2 and "--batch" in r.stderr, r
    finally:
        for p in procs:
            p.kill9()


if __name__ == "__main__":
    main([test_e2e_smoke])
