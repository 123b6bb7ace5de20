"""Smoke test of ferry-bench (ctest bench/e2e_smoke): keeps the end-to-end
benchmark from rotting, in a few seconds.

Starts mqnamesrv and one mqbroker on port 0 in a scratch directory, creates a
topic, and runs ferry-bench as bench/e2e_bench.sh does: a one-second closed
loop of single sends, a batched run, two open-loop runs at a fixed rate (the
second waking the sender every 5 ms, whose wait must show in the latencies),
a consume of the backlog, then a delivery run to a consumer in long polls. Each run's last stdout line must be a RESULT line
that parses, with msgs > 0 and errors = 0; the consumer must read at least
what the first producer run counted.

    python3 bench/e2e_smoke.py --bin build/bin --tmp build/test-tmp
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke_lib import fresh_dir, main, parse_result, run, start_cluster, wait_for  # noqa: E402


def test_e2e_smoke(args):
    d = fresh_dir(args.tmp, "e2e_smoke")
    procs = []
    try:
        ns_addr, _, _ = start_cluster(args, d, procs, "smoke-a", "BenchSmoke",
                                      ["registerNameServerPeriod=1000"])
        admin = os.path.join(args.bin, "mqadmin")

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
            "open loop, ticks": base + ["--rate", "2000", "--tick-us", "5000"],
        }
        first = None
        for name, cmd in runs.items():
            r = run(cmd, timeout_s=60)
            res = parse_result(r.stdout, "ferry-bench")
            assert res["mode"] == "produce", res
            assert res["msgs"] > 0 and res["errors"] == 0, f"{name}: {res}\n{r.stderr}"
            assert res["p50_us"] <= res["p99_us"] <= res["p999_us"] <= res["max_us"], res
            assert res["max_us"] > 0, res
            assert "msgs/s" in r.stderr, f"{name}: no progress line on stderr:\n{r.stderr}"
            first = first or res
            if "--tick-us" in cmd:
                # The sender sleeps at least 5 ms between wake-ups, and latency runs from
                # the intended send time: the messages due meanwhile show that wait.
                assert res["max_us"] >= 4000 and res["p50_us"] >= 1000, res

        r = run([bench, "consume", "-n", ns_addr, "-t", "BenchSmoke", "-g", "smoke",
                 "--from", "first", "--count", str(first["msgs"]), "--duration-s", "30"],
                timeout_s=60)
        res = parse_result(r.stdout, "ferry-bench")
        assert res["mode"] == "consume", res
        assert res["errors"] == 0, f"{res}\n{r.stderr}"
        assert res["msgs"] >= first["msgs"], f"consumed {res['msgs']} < {first['msgs']}"

        # Delivery to a consumer waiting in long polls: every message sent in
        # the window arrives (errors counts the ones that never did).
        r = run([bench, "deliver", "-n", ns_addr, "-t", "BenchSmoke", "-g", "smoke-deliver",
                 "--rate", "200", "--duration-s", "1", "--warmup-s", "0.2", "--queue-id", "2"],
                timeout_s=60)
        res = parse_result(r.stdout, "ferry-bench")
        assert res["mode"] == "deliver", res
        assert res["msgs"] > 0 and res["errors"] == 0, f"{res}\n{r.stderr}"
        assert 0 < res["p50_us"] <= res["p99_us"] <= res["max_us"], res

        # Usage errors exit 2 and name the problem.
        r = run([bench, "produce", "-n", ns_addr, "-t", "BenchSmoke", "--batch", "0"],
                check=False)
        assert r.returncode == 2 and "--batch" in r.stderr, r
        r = run([bench, "deliver", "-n", ns_addr, "-t", "BenchSmoke"], check=False)
        assert r.returncode == 2 and "-g GROUP" in r.stderr, r
        # An option the mode would ignore is refused, not silently dropped.
        r = run([bench, "deliver", "-n", ns_addr, "-t", "BenchSmoke", "-g", "g",
                 "--threads", "2"], check=False)
        assert r.returncode == 2 and "--threads does not apply to deliver" in r.stderr, r
        r = run([bench, "consume", "-n", ns_addr, "-t", "BenchSmoke", "-g", "g",
                 "--batch", "8"], check=False)
        assert r.returncode == 2 and "--batch does not apply to consume" in r.stderr, r
    finally:
        for p in procs:
            p.kill9()


if __name__ == "__main__":
    main([test_e2e_smoke])
