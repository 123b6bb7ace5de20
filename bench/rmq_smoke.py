"""Smoke test of ferry-rmq-bench (ctest bench/rmq_smoke): keeps the RocketMQ
protocol benchmark from rotting, in a few seconds.

Starts mqnamesrv and one mqbroker on port 0 in a scratch directory, creates
a topic of 4 queues, and runs ferry-rmq-bench as bench/rmq_bench.sh does: one
second of single sends (JSON headers), one of batches (binary headers), then
a consume of the backlog from offset 0. Each run's last stdout line must be
a RESULT line that parses, with msgs > 0 and errors = 0; the consumer must
read at least what both producer runs counted (warm-up sends are stored but
not counted) and stop because every queue is drained, not by the clock.

    python3 bench/rmq_smoke.py --bin build/bin --tmp build/test-tmp
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
    assert lines, "ferry-rmq-bench printed nothing on stdout"
    last = lines[-1].split()
    assert last[0] == "RESULT", f"last stdout line is not RESULT: {lines[-1]!r}"
    kv = dict(f.split("=", 1) for f in last[1:])
    assert list(kv) == RESULT_KEYS, f"RESULT keys {list(kv)} != {RESULT_KEYS}"
    out = {"mode": kv["mode"]}
    for k in RESULT_KEYS[1:]:
        out[k] = float(kv[k]) if k in ("secs", "msgs_per_s", "mb_per_s") else int(kv[k])
    return out


def bench(args, argv):
    r = run([os.path.join(args.bin, "ferry-rmq-bench")] + argv, timeout_s=60)
    res = parse_result(r.stdout)
    assert res["mode"] == argv[0], res
    assert res["msgs"] > 0 and res["errors"] == 0, f"{argv}: {res}\nstderr:\n{r.stderr}"
    assert res["msgs_per_s"] > 0 and res["secs"] > 0, res
    return res


def test_rmq_smoke(args):
    d = fresh_dir(args.tmp, "rmq_smoke")
    procs = []
    try:
        ns = Proc([os.path.join(args.bin, "mqnamesrv"), "-o", "listenPort=0",
                   "-o", "listenAddress=127.0.0.1"], os.path.join(d, "namesrv.out"))
        procs.append(ns)
        ns_addr = "127.0.0.1:%d" % listen_port(ns, "mqnamesrv",
                                                r"^mqnamesrv listening on port (\d+)$")
        conf = ["storePathRootDir=" + os.path.join(d, "store"), "listenPort=0",
                "haListenPort=0", "brokerIP1=127.0.0.1", "listenAddress=127.0.0.1",
                "brokerName=rmq-smoke", "namesrvAddr=" + ns_addr,
                "mappedFileSizeCommitLog=67108864", "mappedFileSizeConsumeQueue=1000000",
                "maxHashSlotNum=50000", "maxIndexNum=400000", "autoCreateTopicEnable=false"]
        argv = [os.path.join(args.bin, "mqbroker")]
        for kv in conf:
            argv += ["-o", kv]
        broker = Proc(argv, os.path.join(d, "broker.out"))
        procs.append(broker)
        addr = "127.0.0.1:%d" % listen_port(broker, "mqbroker",
                                             r"^mqbroker listening on port (\d+)$")
        run([os.path.join(args.bin, "mqadmin"), "updateTopic", "-n", ns_addr, "-b", addr,
             "-t", "RmqSmoke", "-r", "4", "-w", "4"])
        single = bench(args, ["produce", "--broker", addr, "-t", "RmqSmoke", "--duration-s", "1",
                              "--warmup-s", "0.2", "--inflight", "64", "--queues", "4"])
        assert single["p50_us"] > 0 and single["max_us"] >= single["p999_us"], single
        batch = bench(args, ["produce", "--broker", addr, "-t", "RmqSmoke", "--duration-s", "1",
                             "--warmup-s", "0", "--inflight", "8", "--batch", "16", "--size",
                             "1024", "--header", "binary", "--conns", "2", "--queues", "4"])
        assert batch["msgs"] % 16 == 0, batch
        cons = bench(args, ["consume", "--broker", addr, "-t", "RmqSmoke", "-g", "rmq-smoke",
                            "--queues", "4", "--duration-s", "30", "--header", "binary"])
        # The warm-up's sends are stored but not counted: at least the counted ones.
        assert cons["msgs"] >= single["msgs"] + batch["msgs"], (cons, single, batch)
        # Stopped because every queue was drained, not by the clock.
        assert cons["secs"] < 30, cons
        assert broker.p.poll() is None, "broker died"
    finally:
        for p in procs:
            p.kill9()


if __name__ == "__main__":
    main([test_rmq_smoke])
