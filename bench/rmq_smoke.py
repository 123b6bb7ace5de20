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
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke_lib import fresh_dir, main, parse_result, run, start_cluster  # noqa: E402


def bench(args, argv):
    r = run([os.path.join(args.bin, "ferry-rmq-bench")] + argv, timeout_s=60)
    res = parse_result(r.stdout, "ferry-rmq-bench")
    assert res["mode"] == argv[0], res
    assert res["msgs"] > 0 and res["errors"] == 0, f"{argv}: {res}\nstderr:\n{r.stderr}"
    assert res["msgs_per_s"] > 0 and res["secs"] > 0, res
    return res


def test_rmq_smoke(args):
    d = fresh_dir(args.tmp, "rmq_smoke")
    procs = []
    try:
        _, addr, broker = start_cluster(args, d, procs, "rmq-smoke", "RmqSmoke")
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
