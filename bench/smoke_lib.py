"""What the benchmark smoke tests (bench/e2e_smoke.py, bench/rmq_smoke.py)
share: a name server and one small broker on port 0, and the RESULT line the
bench tools print last."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from harness import Proc, fresh_dir, listen_port, main, run, wait_for  # noqa: E402,F401 (re-exported)

RESULT_KEYS = ["mode", "msgs", "errors", "secs", "msgs_per_s", "mb_per_s", "p50_us", "p99_us",
               "p999_us", "max_us"]


def parse_result(stdout, tool):
    """The RESULT line, which must be the last line of tool's stdout, as a dict."""
    lines = stdout.strip().splitlines()
    assert lines, f"{tool} printed nothing on stdout"
    last = lines[-1].split()
    assert last[0] == "RESULT", f"last stdout line is not RESULT: {lines[-1]!r}"
    kv = dict(f.split("=", 1) for f in last[1:])
    assert list(kv) == RESULT_KEYS, f"RESULT keys {list(kv)} != {RESULT_KEYS}"
    out = {"mode": kv["mode"]}
    for k in RESULT_KEYS[1:]:
        out[k] = float(kv[k]) if k in ("secs", "msgs_per_s", "mb_per_s") else int(kv[k])
    return out


def start_cluster(args, d, procs, broker_name, topic, extra_conf=()):
    """Starts mqnamesrv and one mqbroker with small files on port 0 under d
    (their Procs go to procs, for the caller to kill) and creates topic with
    4 queues. Returns (name server address, broker address, broker Proc)."""
    ns = Proc([os.path.join(args.bin, "mqnamesrv"), "-o", "listenPort=0",
               "-o", "listenAddress=127.0.0.1"], os.path.join(d, "namesrv.out"))
    procs.append(ns)
    ns_addr = "127.0.0.1:%d" % listen_port(ns, "mqnamesrv",
                                            r"^mqnamesrv listening on port (\d+)$")
    conf = ["storePathRootDir=" + os.path.join(d, "store"), "listenPort=0",
            "haListenPort=0", "brokerIP1=127.0.0.1", "listenAddress=127.0.0.1",
            "brokerName=" + broker_name, "namesrvAddr=" + ns_addr,
            "mappedFileSizeCommitLog=67108864", "mappedFileSizeConsumeQueue=1000000",
            "maxHashSlotNum=50000", "maxIndexNum=400000", "autoCreateTopicEnable=false"]
    argv = [os.path.join(args.bin, "mqbroker")]
    for kv in conf + list(extra_conf):
        argv += ["-o", kv]
    broker = Proc(argv, os.path.join(d, "broker.out"))
    procs.append(broker)
    addr = "127.0.0.1:%d" % listen_port(broker, "mqbroker",
                                         r"^mqbroker listening on port (\d+)$")
    run([os.path.join(args.bin, "mqadmin"), "updateTopic", "-n", ns_addr, "-b", addr,
         "-t", topic, "-r", "4", "-w", "4"])
    return ns_addr, addr, broker
