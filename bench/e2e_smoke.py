"""Smoke test of ferry-bench (ctest bench/e2e_smoke): keeps the end-to-end
benchmark from rotting, in a few seconds. Also runs bench/floor.sh's tools:
native_bench against the broker, and floor_server with and without its disk.

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
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke_lib import (Proc, fresh_dir, listen_port, main, parse_result, run,  # noqa: E402
                       start_cluster, wait_for)


def test_e2e_smoke(args):
    d = fresh_dir(args.tmp, "e2e_smoke")
    procs = []
    try:
        ns_addr, broker_addr, _ = start_cluster(args, d, procs, "smoke-a", "BenchSmoke",
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

        # bench/floor.sh's tools. native_bench: the broker without the client
        # library, straight to its port; every send must come back SEND_OK.
        native = os.path.join(args.bin, "native_bench")
        bport = broker_addr.rsplit(":", 1)[1]
        short = ["--rate", "2000", "--tick-us", "1000", "--duration-s", "1", "--warmup-s", "0.2"]
        r = run([native, "--port", bport, "--topic", "BenchSmoke", "--queues", "4",
                 "--series-ms", "100"] + short, timeout_s=60)
        res = parse_result(r.stdout, "native_bench")
        assert res["msgs"] > 0 and res["errors"] == 0, f"{res}\n{r.stderr}"
        # --series-ms: ten 100 ms windows that together hold every measured
        # message, on monotonic ms 100 apart; an open loop also says how late
        # its sends were.
        series = [dict(kv.split("=") for kv in l.split()[1:])
                  for l in r.stderr.splitlines() if l.startswith("SERIES ")]
        assert len(series) == 10, r.stderr
        assert sum(int(w["n"]) for w in series) == res["msgs"], (series, res)
        ends = [int(w["mono_ms"]) for w in series]
        assert all(b - a == 100 for a, b in zip(ends, ends[1:])), ends
        assert all(int(w["max_us"]) >= int(w["p99_us"]) for w in series if int(w["n"])), series
        assert re.search(r"^SENDER mode=produce late_p50_us=\d+ late_p99_us=\d+ late_p999_us=\d+$",
                         r.stdout, re.M), r.stdout
        r = run([native, "--port", bport, "--series-ms", "-5"], check=False)
        assert r.returncode == 2 and "bad value for --series-ms" in r.stderr, r
        # A topic the broker does not have: the failures are counted and named.
        r = run([native, "--port", bport, "--topic", "NoSuchTopic", "--rate", "100",
                 "--duration-s", "0.5", "--warmup-s", "0"], timeout_s=60, check=False)
        assert r.returncode == 1 and "status" in r.stderr, r
        assert parse_result(r.stdout, "native_bench")["errors"] > 0, r.stdout
        # floor_server, without and with the disk: answers every request.
        for mode in (["--no-disk"], ["--file", os.path.join(d, "floor.data"), "--file-mb", "8",
                                     "--writeback-kb", "64", "--flush-ms", "50"]):
            fs = Proc([os.path.join(args.bin, "floor_server"), "--port", "0"] + mode,
                      os.path.join(d, "floor.out"))
            procs.append(fs)
            fport = listen_port(fs, "floor_server", r"^listening on port (\d+) ")
            # A connection that sends what is not a frame is closed; the
            # next one is served from a clean state (the runs below).
            with socket.create_connection(("127.0.0.1", fport), timeout=10) as sk:
                sk.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"x" * 64)
                assert sk.recv(100) == b"", "floor_server answered a bad frame"
            # 2,000 msgs/s of 128 B for 1.2 s: about 0.4 MB, so the 8 MiB file is not
            # wrapped; 20,000 for a second wraps it about three times.
            for rate in ("2000", "20000"):
                r = run([native, "--port", str(fport), "--rate", rate, "--tick-us", "1000",
                         "--duration-s", "1", "--warmup-s", "0.2", "--size", "1024"],
                        timeout_s=60)
                res = parse_result(r.stdout, "native_bench")
                assert res["msgs"] > 0 and res["errors"] == 0, f"{mode}: {res}\n{r.stderr}"
            fs.kill9()

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
