#!/usr/bin/env python3
"""The kill-master drill (driven by scripts/failover-drill.sh).

One name server, a SYNC_MASTER and its slave; a producer sending numbered
messages at a steady rate; a consumer group reading throughout; the master
killed with SIGKILL (scripts/kill-master.sh) mid-stream; consumers keep
reading from the slave; the master restarted. Then a report: sent,
acknowledged (SEND_OK), consumed, lost (acknowledged but never consumed:
must be 0), duplicates, how long the consumer stalled, and how long until
the master served again.

Two network modes (--net):
  netns     two "hosts" as network namespaces joined by a veth pair,
            10.77.0.1 (host A: name server, master) and 10.77.0.2 (host B:
            slave, producer, consumer). The addresses exist only inside the
            namespaces. Needs root and `ip netns add`.
  loopback  everything on 127.0.0.1, ports from --base-port.
  auto      (default) netns when it works here, else loopback.
The namespaces get names unique to this run (fy-<tag>-<pid>-a/-b) and are
deleted on exit, on SIGINT/SIGTERM, and by the next run if this one was
SIGKILLed (their owner pid is gone).

The raw tool outputs stay in --dir: producer.out (mqproduce's line per
message, in input order: line i is message drill-i), consumer.out (one
consumed body per line), so the report can be checked independently.

Exit status 0 when lost == 0.
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import wait_for  # noqa: E402  (deadline waits, shared with the tests)


def log(msg):
    print(f"drill: {msg}", file=sys.stderr, flush=True)


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the process that started it
    dies, so a SIGKILLed drill or test leaves no broker behind."""
    if _prctl:
        _prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def listening(pid, port):
    """Whether process pid has a TCP socket listening on port. Reads
    /proc/PID/net/tcp*, which shows the sockets of that process's network
    namespace, so it works the same in both modes."""
    want = f":{port:04X}"
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 3 and cols[1].endswith(want) and cols[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def _ip(*argv, check=True):
    r = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {r.stderr.strip()}")
    return r


class Hosts:
    """Two hosts, A and B: network namespaces joined by a veth pair (netns
    mode), or both 127.0.0.1 (loopback mode)."""

    ADDR = {"a": "10.77.0.1", "b": "10.77.0.2"}
    IFACE = {"a": "fy-va", "b": "fy-vb"}
    NAME_RE = re.compile(r"^fy-[a-z]+-(\d+)-[ab]$")

    def __init__(self, mode, tag="drill"):
        self.mode = mode
        self.ns = {h: f"fy-{tag}-{os.getpid()}-{h}" for h in "ab"} if mode == "netns" else {}
        self.created = []

    @staticmethod
    def netns_available():
        """Root, `ip` present, and a namespace can really be created here."""
        if os.geteuid() != 0 or not shutil.which("ip"):
            return False
        probe = f"fy-probe-{os.getpid()}-a"
        try:
            if _ip("netns", "add", probe, check=False).returncode != 0:
                return False
            return _ip("netns", "exec", probe, "true", check=False).returncode == 0
        finally:
            _ip("netns", "del", probe, check=False)

    @classmethod
    def sweep_stale(cls):
        """Deletes namespaces left by runs that were SIGKILLed (and kills
        what still runs in them)."""
        if not shutil.which("ip"):
            return
        r = _ip("netns", "list", check=False)
        for line in r.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            m = cls.NAME_RE.match(name)
            if not m or os.path.exists(f"/proc/{m.group(1)}"):
                continue
            cls._remove(name)
            log(f"deleted stale namespace {name}")

    @staticmethod
    def _remove(name):
        """Kills what runs in namespace name, then deletes it."""
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        _ip("netns", "del", name, check=False)

    def setup(self):
        if self.mode != "netns":
            return
        self.sweep_stale()
        try:
            for h in "ab":
                _ip("netns", "add", self.ns[h])
                self.created.append(self.ns[h])
            # Both ends are created straight inside their namespaces, so
            # parallel runs never see each other's interface names.
            _ip("link", "add", self.IFACE["a"], "netns", self.ns["a"], "type", "veth",
                "peer", "name", self.IFACE["b"], "netns", self.ns["b"])
            for h in "ab":
                _ip("-n", self.ns[h], "addr", "add", f"{self.ADDR[h]}/24", "dev", self.IFACE[h])
                _ip("-n", self.ns[h], "link", "set", self.IFACE[h], "up")
                _ip("-n", self.ns[h], "link", "set", "lo", "up")
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self):
        for name in self.created:
            self._remove(name)
        self.created = []

    def addr(self, host):
        return self.ADDR[host] if self.mode == "netns" else "127.0.0.1"

    def wrap(self, host, argv):
        """argv run on host."""
        return ["ip", "netns", "exec", self.ns[host], *argv] if self.mode == "netns" else list(argv)

    # ---- cutting links (netns mode only)

    def cut_port(self, host, port):
        """Drops every TCP packet to or from port on host (nftables)."""
        self._need_netns()
        rules = (f"add table inet ferry_cut\n"
                 f"add chain inet ferry_cut in {{ type filter hook input priority 0 ; }}\n"
                 f"add chain inet ferry_cut out {{ type filter hook output priority 0 ; }}\n"
                 f"add rule inet ferry_cut in tcp dport {port} drop\n"
                 f"add rule inet ferry_cut out tcp sport {port} drop\n")
        r = subprocess.run(self.wrap(host, ["nft", "-f", "-"]), input=rules, capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"nft on host {host}: {r.stderr.strip()}")

    def heal_port(self, host):
        self._need_netns()
        subprocess.run(self.wrap(host, ["nft", "delete", "table", "inet", "ferry_cut"]),
                       capture_output=True, timeout=30, check=True)

    def set_link(self, up):
        """Takes the veth pair between A and B down (or up again)."""
        self._need_netns()
        for h in "ab":
            _ip("-n", self.ns[h], "link", "set", self.IFACE[h], "up" if up else "down")

    def _need_netns(self):
        if self.mode != "netns":
            raise RuntimeError("cutting links needs netns mode")


def resolve_mode(wanted):
    if wanted == "auto":
        return "netns" if Hosts.netns_available() else "loopback"
    if wanted == "netns" and not Hosts.netns_available():
        raise RuntimeError("--net netns: cannot create network namespaces here "
                           "(needs root and a working `ip netns add`)")
    return wanted


class Cluster:
    """Name server and master on host A, slave on host B."""

    def __init__(self, args, hosts):
        self.a = args
        self.bin = args.bin
        self.dir = args.dir
        self.hosts = hosts
        self.procs = {}
        if hosts.mode == "netns":
            # Each host has its own ports: the production defaults.
            self.ns_port, self.master_port, self.ha_port, self.slave_port = 9876, 10911, 10912, 10921
        else:
            base = args.base_port
            self.ns_port, self.master_port, self.ha_port, self.slave_port = base, base + 1, base + 2, base + 3
        self.ns = f"{hosts.addr('a')}:{self.ns_port}"
        self.master_addr = f"{hosts.addr('a')}:{self.master_port}"
        self.slave_addr = f"{hosts.addr('b')}:{self.slave_port}"

    def _start(self, name, host, argv, ready_port):
        out = open(os.path.join(self.dir, f"{name}.log"), "ab")
        p = subprocess.Popen(self.hosts.wrap(host, argv), stdout=out, stderr=out,
                             preexec_fn=_die_with_parent)
        out.close()
        self.procs[name] = p

        def up():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see {self.dir}/{name}.log")
            return listening(p.pid, ready_port)
        wait_for(up, 30, f"{name} listening on port {ready_port}", 0.02)
        return p

    def broker_args(self, name, master, extra=()):
        host = "a" if master else "b"
        conf = os.path.join(ROOT, "conf", "broker-a.conf" if master else "broker-a-s.conf")
        port = self.master_port if master else self.slave_port
        ip = self.hosts.addr(host)
        argv = [os.path.join(self.bin, "mqbroker"), "-c", conf,
                "-o", f"namesrvAddr={self.ns}", "-o", f"listenPort={port}",
                "-o", f"listenAddress={ip}", "-o", f"brokerIP1={ip}",
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
        return argv + list(extra), port, host

    def start(self, extra_master=(), extra_slave=()):
        self.extra = {"broker-a": list(extra_master), "broker-a-s": list(extra_slave)}
        os.makedirs(self.dir, exist_ok=True)
        self._start("namesrv", "a", [os.path.join(self.bin, "mqnamesrv"), "-o", f"listenPort={self.ns_port}",
                                     "-o", f"listenAddress={self.hosts.addr('a')}"], self.ns_port)
        self.start_broker("broker-a")
        self.start_broker("broker-a-s")

    def start_broker(self, name):
        argv, port, host = self.broker_args(name, name == "broker-a", self.extra.get(name, ()))
        self._start(name, host, argv, port)

    def tool(self, *argv, host="b", input=None, timeout=60, check=True):
        """Runs a client tool (mqadmin, mqproduce, ...) on host."""
        r = subprocess.run(self.hosts.wrap(host, [os.path.join(self.bin, argv[0]), *argv[1:]]),
                           input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def broker_status(self, addr, host="b", what="brokerStatus"):
        """mqadmin brokerStatus (or haStatus) of one broker as a dict ({}
        when it does not answer)."""
        r = self.tool("mqadmin", what, "-n", self.ns, "-b", addr, host=host, check=False, timeout=30)
        if r.returncode != 0:
            return {}
        return {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in r.stdout.splitlines())}

    def create_topic(self, topic, queues=4, host="b"):
        """Creates topic on the master and waits until the slave adopted it
        (metadata sync), so the slave can serve it when the master dies."""
        self.tool("mqadmin", "updateTopic", "-n", self.ns, "-b", self.master_addr, "-t", topic,
                  "-r", str(queues), "-w", str(queues), host=host, timeout=30)

        def slave_knows():
            return int(self.broker_status(self.slave_addr, host).get("topics", "0") or 0) >= 1
        wait_for(slave_knows, 30, "the slave to adopt the topic from the master", 0.1)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def drill(args, hosts):
    c = Cluster(args, hosts)
    c.start()
    report = {}
    prod = cons = None
    try:
        c.create_topic("Drill")

        consumed = []          # (time, body)
        cons_out = open(os.path.join(args.dir, "consumer.out"), "w")
        cons = subprocess.Popen(hosts.wrap("b", [os.path.join(args.bin, "mqconsume"), "-n", c.ns,
                                                 "-t", "Drill", "-g", "DrillGroup", "--from", "first",
                                                 "--format", "json"]),
                                stdout=subprocess.PIPE, stderr=open(os.path.join(args.dir, "consumer.log"), "wb"),
                                preexec_fn=_die_with_parent)

        from_slave = [0]       # deliveries the slave served

        def read_consumer():
            for line in cons.stdout:
                try:
                    m = json.loads(line)
                except ValueError:
                    continue
                body = str(m.get("body"))
                consumed.append((time.monotonic(), body))
                from_slave[0] += m.get("brokerId", 0) != 0
                cons_out.write(body + "\n")
            cons_out.close()
        tc = threading.Thread(target=read_consumer, daemon=True)
        tc.start()

        prod = subprocess.Popen(hosts.wrap("b", [os.path.join(args.bin, "mqproduce"), "-n", c.ns,
                                                 "-t", "Drill", "--timeout-ms", "3000", "--inflight", "64"]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(os.path.join(args.dir, "producer.log"), "wb"),
                                preexec_fn=_die_with_parent)
        results = []           # (time, status)
        prod_out = open(os.path.join(args.dir, "producer.out"), "w")

        def read_producer():
            for line in prod.stdout:
                text = line.decode(errors="replace")
                results.append((time.monotonic(), text.split()[0] if text.split() else "?"))
                prod_out.write(text)
            prod_out.close()
        tp = threading.Thread(target=read_producer, daemon=True)
        tp.start()

        sent = 0
        start = time.monotonic()
        lead = 2.0
        cycle = args.down_seconds + args.up_seconds
        # Runs at least --seconds, and until every kill is done and the last
        # restart had --up-seconds of traffic (restarts take their own time,
        # so the end moves); the hard limit only stops a drill gone wrong.
        end_at = start + args.seconds
        hard_end = start + 4 * (args.seconds + lead + args.kills * cycle + args.up_seconds) + 60
        kills_done = 0
        kill_at = start + lead
        restart_at = kill_at + args.down_seconds
        killed_t = restarted_t = None
        restarts = []          # restart times
        down_total = 0.0
        interval = 1.0 / args.rate
        next_send = start
        while True:
            now = time.monotonic()
            if now >= hard_end:
                raise RuntimeError(f"drill still running after {now - start:.0f} s: "
                                   f"{kills_done} of {args.kills} kills done")
            if now >= end_at and kills_done == args.kills and \
                    (restarted_t is None or now >= restarted_t + args.up_seconds):
                break
            if kills_done < args.kills and killed_t is None and now >= kill_at:
                r = subprocess.run([os.path.join(ROOT, "scripts", "kill-master.sh"),
                                    "-c", os.path.join(ROOT, "conf", "broker-a.conf"),
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
                restarts.append(restarted_t)
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
        # Per restart: the first SEND_OK after it (only the master takes sends).
        serving_again = []
        for t0 in restarts:
            first = next((t for t, s in results if s == "SEND_OK" and t >= t0), None)
            serving_again.append(round(first - t0, 3) if first is not None else None)
        for i, (t, status) in enumerate(results):
            if status == "SEND_OK":
                acked.add(f"drill-{i}")
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
        first_seen = {}
        for t, b in consumed:
            first_seen.setdefault(b, t)
        # How long an acknowledged message waited before a consumer got it
        # (it can be consumed before its SEND_OK line is read: then 0).
        delays = [max(0.0, first_seen[f"drill-{i}"] - t) for i, (t, s) in enumerate(results)
                  if s == "SEND_OK" and f"drill-{i}" in first_seen]
        lost = sorted(acked - unique, key=lambda s: int(s.split("-")[1]))
        times = [t for t, _ in consumed]
        stall = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        known = [s for s in serving_again if s is not None]
        report = {
            "mode": hosts.mode,
            "hosts": ({"a": f"{hosts.ns['a']} {hosts.addr('a')} (name server, master)",
                       "b": f"{hosts.ns['b']} {hosts.addr('b')} (slave, producer, consumer)"}
                      if hosts.mode == "netns" else {"a": "127.0.0.1", "b": "127.0.0.1"}),
            "sent": sent,
            "acknowledged": len(acked),
            "stored_master_only": sum(1 for _, s in results if s in ("SLAVE_NOT_AVAILABLE", "FLUSH_SLAVE_TIMEOUT")),
            "failed": sum(1 for _, s in results if s == "SEND_FAILED"),
            "consumed": len(unique),
            "lost": len(lost),
            "lost_examples": lost[:10],
            "duplicates": len(bodies) - len(unique),
            "consumed_from_slave": from_slave[0],
            "consumer_max_stall_s": round(stall, 3),
            "consumer_max_delay_s": round(max(delays, default=0.0), 3),
            "master_kills": kills_done,
            "master_down_total_s": round(down_total, 3),
            "master_serving_again_after_restart_s": serving_again[-1] if serving_again else None,
            "master_serving_again_max_s": max(known) if known else None,
            "master_serving_again_each_s": serving_again,
        }
    finally:
        for p in (prod, cons):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        c.stop()
    return report


def on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: cleanup runs


def run(args):
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    mode = resolve_mode(args.net)
    hosts = Hosts(mode, args.tag)
    hosts.setup()
    log(f"mode: {mode}" + (f" (namespaces {hosts.ns['a']}, {hosts.ns['b']})" if mode == "netns" else ""))
    try:
        report = drill(args, hosts)
    finally:
        hosts.cleanup()
    print(json.dumps(report, indent=2))
    for k, v in report.items():
        log(f"{k}: {v}")
    ok = report.get("lost", 1) == 0 and report.get("acknowledged", 0) > 0 \
        and report.get("master_kills") == args.kills
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    p.add_argument("--dir", default="data/drill")
    p.add_argument("--net", choices=("auto", "netns", "loopback"), default="auto",
                   help="hosts as network namespaces, or loopback (auto: netns when possible)")
    p.add_argument("--tag", default="drill", help="namespace names: fy-TAG-PID-a/-b")
    p.add_argument("--base-port", type=int, default=19876, help="loopback mode: name server port; "
                   "master, its HA port and the slave use the next three")
    p.add_argument("--rate", type=float, default=200.0, help="messages per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--down-seconds", type=float, default=5.0)
    p.add_argument("--up-seconds", type=float, default=5.0, help="between a restart and the next kill")
    p.add_argument("--kills", type=int, default=1)
    p.add_argument("--drain-seconds", type=float, default=60.0)
    a = p.parse_args()
    if not re.fullmatch(r"[a-z]{1,12}", a.tag):
        p.error("--tag: 1-12 lowercase letters")
    a.dir = os.path.abspath(a.dir)
    a.bin = os.path.abspath(a.bin)
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
