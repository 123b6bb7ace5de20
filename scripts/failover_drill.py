#!/usr/bin/env python3
"""The kill-master drill (driven by scripts/failover-drill.sh).

One name server, a SYNC_MASTER and its slave on this machine; a producer
sending numbered messages at a steady rate; a consumer group reading
throughout; the master killed with SIGKILL (scripts/kill-master.sh)
mid-stream; consumers keep reading from the slave; the master restarted.
Then a report: sent, acknowledged (SEND_OK), consumed, lost (acknowledged
but never consumed: must be 0), duplicates, how long the consumer stalled,
and how long until the master served again.

Exit status 0 when lost == 0.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time


def log(msg):
    print(f"drill: {msg}", file=sys.stderr, flush=True)


class Cluster:
    def __init__(self, args):
        self.a = args
        self.bin = args.bin
        self.dir = args.dir
        self.procs = {}
        base = args.base_port
        self.ns_port, self.master_port, self.ha_port, self.slave_port = base, base + 1, base + 2, base + 3
        self.ns = f"127.0.0.1:{self.ns_port}"

    def _start(self, name, argv, ready_port):
        out = open(os.path.join(self.dir, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=out)
        self.procs[name] = p
        deadline = time.monotonic() + 30
        import socket
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see {self.dir}/{name}.log")
            try:
                socket.create_connection(("127.0.0.1", ready_port), timeout=0.2).close()
                return p
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} not listening on {ready_port} after 30 s")

    def broker_args(self, name, master):
        conf = "conf/broker-a.conf" if master else "conf/broker-a-s.conf"
        port = self.master_port if master else self.slave_port
        argv = [os.path.join(self.bin, "mqbroker"), "-c", conf,
                "-o", f"namesrvAddr={self.ns}", "-o", f"listenPort={port}",
                "-o", "listenAddress=127.0.0.1", "-o", "brokerIP1=127.0.0.1",
                "-o", f"storePathRootDir={self.dir}/{name}",
                "-o", f"pidFile={self.dir}/{name}.pid",
                "-o", "registerNameServerPeriod=1000",
                "-o", "slaveSyncMetadataInterval=500",
                "-o", "haSendHeartbeatInterval=200", "-o", "haHousekeepingInterval=2000",
                "-o", "mappedFileSizeCommitLog=67108864",
                "-o", "maxHashSlotNum=10007", "-o", "maxIndexNum=400000",
                "-o", "autoCreateTopicEnable=false"]
        if master:
            argv += ["-o", f"haListenPort={self.ha_port}"]
        return argv, port

    def start(self):
        self._start("namesrv", [os.path.join(self.bin, "mqnamesrv"), "-o", f"listenPort={self.ns_port}",
                                "-o", "listenAddress=127.0.0.1"], self.ns_port)
        self.start_broker("broker-a")
        self.start_broker("broker-a-s")

    def start_broker(self, name):
        argv, port = self.broker_args(name, name == "broker-a")
        self._start(name, argv, port)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run(args):
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    c = Cluster(args)
    c.start()
    report = {}
    try:
        subprocess.run([os.path.join(args.bin, "mqadmin"), "updateTopic", "-n", c.ns,
                        "-b", f"127.0.0.1:{c.master_port}", "-t", "Drill", "-r", "4", "-w", "4"],
                       check=True, capture_output=True, timeout=30)
        # The slave must know the topic before the master dies (metadata sync).
        time.sleep(1.5)

        consumed = []          # (time, body)
        cons = subprocess.Popen([os.path.join(args.bin, "mqconsume"), "-n", c.ns, "-t", "Drill",
                                 "-g", "DrillGroup", "--from", "first", "--format", "body"],
                                stdout=subprocess.PIPE, stderr=open(os.path.join(args.dir, "consumer.log"), "wb"))

        def read_consumer():
            for line in cons.stdout:
                consumed.append((time.monotonic(), line.decode(errors="replace").strip()))
        tc = threading.Thread(target=read_consumer, daemon=True)
        tc.start()

        prod = subprocess.Popen([os.path.join(args.bin, "mqproduce"), "-n", c.ns, "-t", "Drill",
                                 "--timeout-ms", "3000", "--inflight", "64"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(os.path.join(args.dir, "producer.log"), "wb"))
        results = []           # (time, status)

        def read_producer():
            for line in prod.stdout:
                results.append((time.monotonic(), line.decode(errors="replace").split()[0]))
        tp = threading.Thread(target=read_producer, daemon=True)
        tp.start()

        sent = 0
        start = time.monotonic()
        lead = 2.0
        cycle = args.down_seconds + args.up_seconds
        end_at = start + max(args.seconds, lead + args.kills * cycle + args.up_seconds)
        kills_done = 0
        kill_at = start + lead
        restart_at = kill_at + args.down_seconds
        killed_t = restarted_t = None
        down_total = 0.0
        interval = 1.0 / args.rate
        next_send = start
        while time.monotonic() < end_at:
            now = time.monotonic()
            if kills_done < args.kills and killed_t is None and now >= kill_at:
                r = subprocess.run(["scripts/kill-master.sh", "-c", "conf/broker-a.conf",
                                    "-p", os.path.join(args.dir, "broker-a.pid")],
                                   capture_output=True, text=True, timeout=30)
                log(r.stdout.strip() or r.stderr.strip())
                if r.returncode != 0:
                    raise RuntimeError("kill-master.sh failed: " + r.stderr)
                c.procs["broker-a"].wait()
                killed_t = time.monotonic()
            if killed_t is not None and now >= restart_at:
                c.start_broker("broker-a")
                restarted_t = time.monotonic()
                down_total += restarted_t - killed_t
                kills_done += 1
                log(f"master restarted ({kills_done}/{args.kills})")
                killed_t = None
                kill_at = restarted_t + args.up_seconds
                restart_at = kill_at + args.down_seconds
            if now >= next_send:
                prod.stdin.write(f"drill-{sent}\n".encode())
                prod.stdin.flush()
                sent += 1
                next_send += interval
            else:
                time.sleep(min(interval, next_send - now))
        prod.stdin.close()
        prod.wait(timeout=120)
        tp.join(timeout=10)

        acked = set()
        first_ok_after_restart = None
        for i, (t, status) in enumerate(results):
            if status == "SEND_OK":
                acked.add(f"drill-{i}")
                if restarted_t and t >= restarted_t and first_ok_after_restart is None:
                    first_ok_after_restart = t
        # Wait until every acknowledged message is consumed (or the deadline).
        deadline = time.monotonic() + args.drain_seconds
        while time.monotonic() < deadline:
            if acked <= {b for _, b in consumed}:
                break
            time.sleep(0.1)
        cons.send_signal(signal.SIGTERM)
        try:
            cons.wait(timeout=20)
        except subprocess.TimeoutExpired:
            cons.kill()
        tc.join(timeout=10)

        bodies = [b for _, b in consumed]
        unique = set(bodies)
        lost = sorted(acked - unique, key=lambda s: int(s.split("-")[1]))
        times = [t for t, _ in consumed]
        stall = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        report = {
            "sent": sent,
            "acknowledged": len(acked),
            "stored_master_only": sum(1 for _, s in results if s in ("SLAVE_NOT_AVAILABLE", "FLUSH_SLAVE_TIMEOUT")),
            "failed": sum(1 for _, s in results if s == "SEND_FAILED"),
            "consumed": len(unique),
            "lost": len(lost),
            "lost_examples": lost[:10],
            "duplicates": len(bodies) - len(unique),
            "consumer_max_stall_s": round(stall, 3),
            "master_kills": kills_done,
            "master_down_total_s": round(down_total, 3),
            "master_serving_again_after_restart_s":
                round(first_ok_after_restart - restarted_t, 3) if first_ok_after_restart and restarted_t else None,
        }
    finally:
        c.stop()
    print(json.dumps(report, indent=2))
    for k, v in report.items():
        log(f"{k}: {v}")
    ok = report.get("lost", 1) == 0 and report.get("acknowledged", 0) > 0 \
        and report.get("master_kills") == args.kills
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default="build/bin")
    p.add_argument("--dir", default="data/drill")
    p.add_argument("--base-port", type=int, default=19876)
    p.add_argument("--rate", type=float, default=200.0, help="messages per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--down-seconds", type=float, default=5.0)
    p.add_argument("--up-seconds", type=float, default=5.0, help="between a restart and the next kill")
    p.add_argument("--kills", type=int, default=1)
    p.add_argument("--drain-seconds", type=float, default=60.0)
    a = p.parse_args()
    a.dir = os.path.abspath(a.dir)
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
