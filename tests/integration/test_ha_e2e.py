"""HA with real processes (issue: HA, acceptance 3, 4 and 5).

- Redirect: a consumer far behind on the master (slaveReadBehindBytes set
  low) is sent to the slave (brokerId 1 in mqconsume --format json), and
  back to the master (brokerId 0) once it has caught up.
- Link cut: the slave is frozen with SIGSTOP; the SYNC_MASTER answers
  SLAVE_NOT_AVAILABLE or FLUSH_SLAVE_TIMEOUT within its timeouts (no send
  hangs) and SEND_OK again by itself after SIGCONT; nothing acknowledged is
  lost and the slave ends where the master does.
- Brokers and the name server ignore SIGPIPE (a peer's reset is an error
  on that connection, not the end of the process).
- SYNC_MASTER visibility (docs/OPERATIONS.md, "What consumers see"):
  records the master stored without a slave (SLAVE_NOT_AVAILABLE) stay
  hidden from consumers across master restarts (clean and SIGKILL) until the
  slave returns and acknowledges them; then they show, none lost, and the
  slave logs that it caught up.
- A slave whose disk is slower than its link catches up a backlog over one
  connection: it stops reading while its write buffers are full.
- The link cut between two real hosts (network namespaces, a firewall rule
  and a link going down) is in test_ha_netns.py.

Every process listens on port 0 and the test reads the port it printed, so
runs from several worktrees at once do not collide.
"""
import json
import os
import re
import signal
import subprocess
import time

from harness import fresh_dir, main, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Pair:
    def __init__(self, args, name, extra_master=(), slave=True):
        self.args = args
        self.dir = fresh_dir(args.tmp, name)
        self.procs = {}
        try:
            self.ns_port = self._start("namesrv", ["mqnamesrv", "-o", "listenPort=0",
                                                   "-o", "listenAddress=127.0.0.1"])
            self.ns = f"127.0.0.1:{self.ns_port}"
            self.m_port = self._start("master",
                                      self._broker("master", True) + list(extra_master))
            if slave:
                self.start_slave()
        except BaseException:  # no caller holds the pair yet to stop what started
            self.stop()
            raise

    def start_slave(self, extra=(), env=None):
        self.s_port = self._start("slave", self._broker("slave", False) + list(extra), env)

    def _broker(self, name, master):
        conf = os.path.join(ROOT, "conf", "broker-a.conf" if master else "broker-a-s.conf")
        argv = ["mqbroker", "-c", conf, "-o", f"namesrvAddr={self.ns}", "-o", "listenPort=0",
                "-o", "listenAddress=127.0.0.1", "-o", "brokerIP1=127.0.0.1",
                "-o", f"storePathRootDir={self.dir}/{name}", "-o", f"pidFile={self.dir}/{name}.pid",
                "-o", "registerNameServerPeriod=1000", "-o", "slaveSyncMetadataInterval=300",
                "-o", "haSendHeartbeatInterval=200", "-o", "haHousekeepingInterval=2000",
                "-o", "slaveTimeout=1000", "-o", "mappedFileSizeCommitLog=67108864",
                "-o", "maxHashSlotNum=10007", "-o", "maxIndexNum=400000",
                "-o", "autoCreateTopicEnable=false"]
        if master:
            argv += ["-o", "haListenPort=0"]  # the slave learns it from the name server
        return argv

    def _start(self, name, argv, env=None):
        """Starts a process (environment env added) and returns the port it
        printed it listens on."""
        argv = [os.path.join(self.args.bin, argv[0])] + argv[1:]
        path = os.path.join(self.dir, f"{name}.log")
        start_at = os.path.getsize(path) if os.path.exists(path) else 0  # a restart appends
        log = open(path, "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log,
                             env=dict(os.environ, **env) if env else None)
        self.procs[name] = p

        def port():
            assert p.poll() is None, f"{name} exited; see {path}"
            with open(path, "rb") as f:
                f.seek(start_at)
                m = re.search(rb"^mq(?:namesrv|broker) listening on port (\d+)$", f.read(), re.M)
            return int(m.group(1)) if m else None
        return wait_for(port, 30, f"{name} to print its port")

    def tool(self, *argv, input=None, timeout=60, check=True):
        r = subprocess.run([os.path.join(self.args.bin, argv[0])] + list(argv[1:]), input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"{argv} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return r

    def create_topic(self, topic):
        self.tool("mqadmin", "updateTopic", "-n", self.ns, "-b", f"127.0.0.1:{self.m_port}",
                  "-t", topic, "-r", "2", "-w", "2")

        def slave_knows():  # the slave adopts topics from the master's metadata
            r = self.tool("mqadmin", "brokerStatus", "-n", self.ns, "-b",
                          f"127.0.0.1:{self.s_port}", check=False)
            return r.returncode == 0 and any(
                l.split(":")[0].strip() == "topics" and int(l.split(":")[1]) >= 1
                for l in r.stdout.splitlines() if ":" in l)
        wait_for(slave_knows, 30, "the slave to adopt the topic from the master")

    def restart_master(self, extra_master=(), sig=signal.SIGKILL):
        """Stops the master with sig (SIGKILL: a crash; SIGTERM: a clean
        shutdown) and starts it again on the same store."""
        p = self.procs["master"]
        p.send_signal(sig)
        p.wait(timeout=60)
        self.m_port = self._start("master", self._broker("master", True) + list(extra_master))

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


def produce(pair, topic, lines, timeout_ms=3000):
    r = pair.tool("mqproduce", "-n", pair.ns, "-t", topic, "--timeout-ms", str(timeout_ms),
                  input="".join(f"{l}\n" for l in lines), check=False, timeout=120)
    return [l.split()[0] for l in r.stdout.splitlines()]


def test_redirect_to_slave_and_back(args):
    pair = Pair(args, "ha-redirect",
                extra_master=["-o", "slaveReadEnable=true", "-o", "slaveReadBehindBytes=20000"])
    try:
        pair.create_topic("Redirect")
        wait_for(lambda: produce(pair, "Redirect", ["r-first"])[0] == "SEND_OK", 30,
                 "SEND_OK with the slave attached")
        statuses = produce(pair, "Redirect", [f"r-{i}" for i in range(2999)])
        assert statuses.count("SEND_OK") == 2999, statuses[:5]
        r = pair.tool("mqconsume", "-n", pair.ns, "-t", "Redirect", "-g", "RedirectGroup",
                      "--from", "first", "--format", "json", "--max", "3000",
                      "--idle-exit-ms", "15000", timeout=120)
        msgs = [json.loads(l) for l in r.stdout.splitlines()]
        assert len({m["body"] for m in msgs}) == 3000, \
            f"{len(msgs)} lines, {len({m['body'] for m in msgs})} distinct; ids {set(m['brokerId'] for m in msgs)}\n{r.stderr[-3000:]}"
        ids = [m["brokerId"] for m in msgs]
        assert 1 in ids, "the consumer was never redirected to the slave"
        # After catching up the slave sends it back: new messages come from the master.
        statuses = produce(pair, "Redirect", [f"late-{i}" for i in range(20)])
        r = pair.tool("mqconsume", "-n", pair.ns, "-t", "Redirect", "-g", "RedirectGroup",
                      "--format", "json", "--max", "20", "--idle-exit-ms", "15000", timeout=120)
        late = [json.loads(l) for l in r.stdout.splitlines()]
        assert {m["body"] for m in late} == {f"late-{i}" for i in range(20)}
        assert 0 in [m["brokerId"] for m in late], "the consumer did not come back to the master"
    finally:
        pair.stop()


def ignores_sigpipe(pid):
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(l.split()[1], 16) for l in f if l.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGPIPE - 1)))


def test_link_cut_and_heal(args):
    pair = Pair(args, "ha-linkcut")
    try:
        # A peer resetting a connection mid-write (a killed slave, master or
        # client) must not kill a broker or name server with SIGPIPE.
        for name, p in pair.procs.items():
            assert ignores_sigpipe(p.pid), f"{name} dies of SIGPIPE when a peer resets"
        pair.create_topic("LinkCut")
        acked = []
        wait_for(lambda: produce(pair, "LinkCut", ["warmup"])[0] == "SEND_OK", 30, "SEND_OK with the slave")
        pair.procs["slave"].send_signal(signal.SIGSTOP)
        start = time.monotonic()
        statuses = produce(pair, "LinkCut", [f"cut-{i}" for i in range(20)], timeout_ms=5000)
        took = time.monotonic() - start
        assert len(statuses) == 20
        assert set(statuses) <= {"SLAVE_NOT_AVAILABLE", "FLUSH_SLAVE_TIMEOUT", "SEND_OK"}, statuses
        assert "SEND_OK" not in statuses[5:], statuses  # a frozen slave acknowledges nothing
        assert took < 30, f"sends took {took:.1f}s with the slave frozen"
        # brokerStatus sums replication up: the frozen slave received none of it.
        st = broker_status(pair, pair.m_port)
        assert st["haSlaves"] == "1" and int(st["slaveFallBehindMuch"]) > 0, st
        pair.procs["slave"].send_signal(signal.SIGCONT)
        wait_for(lambda: produce(pair, "LinkCut", ["healed"])[0] == "SEND_OK", 30,
                 "SEND_OK again after SIGCONT")
        acked = [f"after-{i}" for i in range(50)]
        assert produce(pair, "LinkCut", acked).count("SEND_OK") == 50
        r = pair.tool("mqconsume", "-n", pair.ns, "-t", "LinkCut", "-g", "LinkCutGroup",
                      "--from", "first", "--format", "body", "--idle-exit-ms", "5000", timeout=120)
        got = set(r.stdout.split())
        assert set(acked) <= got and "warmup" in got and "healed" in got

        def same_end():
            ends = [pair.tool("mqadmin", "haStatus", "-n", pair.ns, "-b", f"127.0.0.1:{port}",
                              check=False).stdout for port in (pair.m_port, pair.s_port)]
            ends = [[l.split(":")[1].strip() for l in e.splitlines() if l.split(":")[0].strip() == "logEnd"]
                    for e in ends]
            return ends[0] and ends[0] == ends[1]
        wait_for(same_end, 30, "the slave's log to end where the master's does", 0.1)
        wait_for(lambda: broker_status(pair, pair.m_port)["slaveFallBehindMuch"] == "0", 30,
                 "the master to count the slave as caught up")
        st = broker_status(pair, pair.s_port)
        assert st["masterAddr"] == ha_status(pair, pair.m_port)["haAddr"], st
        assert st["haState"] == "STREAMING" and st["haLagBytes"] == "0", st
        assert "haSlaves" not in st and "masterAddr" not in broker_status(pair, pair.m_port)
    finally:
        pair.stop()


def broker_status(pair, port):
    r = pair.tool("mqadmin", "brokerStatus", "-n", pair.ns, "-b", f"127.0.0.1:{port}")
    return {l.split(":", 1)[0].strip(): l.split(":", 1)[1].strip()
            for l in r.stdout.splitlines() if ":" in l}


def ha_status(pair, port):
    r = pair.tool("mqadmin", "haStatus", "-n", pair.ns, "-b", f"127.0.0.1:{port}")
    return {l.split(":", 1)[0].strip(): l.split(":", 1)[1].strip()
            for l in r.stdout.splitlines() if ":" in l}


def test_slow_slave_catches_up_over_one_connection(args):
    """A slave whose disk is slower than its link (every write completes
    50 ms late, two 1 MiB write buffers) copies a 4 MB backlog: when its
    write buffers are full it stops reading, so TCP slows the master,
    instead of dropping the link and starting over a second later."""
    pair = Pair(args, "ha-slow-slave", extra_master=["-o", "brokerRole=ASYNC_MASTER"], slave=False)
    try:
        pair.tool("mqadmin", "updateTopic", "-n", pair.ns, "-b", f"127.0.0.1:{pair.m_port}",
                  "-t", "Backlog", "-r", "2", "-w", "2")
        lines = [f"{i:06d}-" + "x" * 1000 for i in range(4000)]
        assert produce(pair, "Backlog", lines).count("SEND_OK") == len(lines)
        master_end = int(ha_status(pair, pair.m_port)["logEnd"])
        assert master_end > 4_000_000
        pair.start_slave(["-o", "writeBufferSize=1048576", "-o", "writeBufferCount=2",
                          "-o", "maxMessageSize=65536"],
                         env={"FERRY_TEST_WRITE_DELAY_MS": "50"})
        log_path = os.path.join(pair.dir, "slave.log")

        def copied():
            with open(log_path, errors="replace") as f:
                m = re.search(r"caught up with master \S+: copied (\d+) bytes", f.read())
            return int(m.group(1)) if m else None
        assert wait_for(copied, 120, "the slave to catch up") == master_end
        with open(log_path, errors="replace") as f:
            log = f.read()
        assert "FERRY_TEST_WRITE_DELAY_MS=50" in log, "the slave must run with the slow writes"
        assert "a buffer or queue is full" not in log and "reconnecting" not in log, log
        assert log.count("replicating from master") == 1, log
        holds = int(ha_status(pair, pair.s_port)["inputHolds"])
        assert holds > 0, "the slave never had to stop reading: the test did not test"
        assert int(ha_status(pair, pair.s_port)["logEnd"]) == master_end
    finally:
        pair.stop()


def consume_all(pair, topic, group):
    r = pair.tool("mqconsume", "-n", pair.ns, "-t", topic, "-g", group, "--from", "first",
                  "--format", "body", "--idle-exit-ms", "3000", timeout=120,
                  check=False)  # its exit commit may wait for the frozen slave
    return set(r.stdout.split())


def status_value(pair, port, key):
    r = pair.tool("mqadmin", "brokerStatus", "-n", pair.ns, "-b", f"127.0.0.1:{port}", check=False)
    for l in r.stdout.splitlines():
        if ":" in l and l.split(":")[0].strip() == key:
            return int(l.split(":", 1)[1])
    return None


def test_sync_master_shows_nothing_unacknowledged_across_restarts(args):
    """The SYNC_MASTER rule across restarts: what the master stored without
    a slave stays hidden after it restarts (the slave still frozen), and
    shows, none lost, once the slave is back and has acknowledged it."""
    pair = Pair(args, "ha-gap")
    try:
        pair.create_topic("Gap")
        wait_for(lambda: produce(pair, "Gap", ["warmup"])[0] == "SEND_OK", 30, "SEND_OK with the slave")
        pair.procs["slave"].send_signal(signal.SIGSTOP)
        lines = [f"gap-{i}" for i in range(10)]
        statuses = produce(pair, "Gap", lines, timeout_ms=5000)
        assert set(statuses) <= {"SLAVE_NOT_AVAILABLE", "FLUSH_SLAVE_TIMEOUT"}, statuses
        seen = consume_all(pair, "Gap", "GapBefore")
        assert "warmup" in seen and not seen & set(lines), seen
        for n, sig in enumerate((signal.SIGTERM, signal.SIGKILL)):  # clean, then a crash
            pair.restart_master(sig=sig)
            seen = wait_for(lambda: (lambda s: s if "warmup" in s else None)(
                consume_all(pair, "Gap", f"GapAfter{n}")), 60, "a consumer to read from the restarted master")
            assert not seen & set(lines), \
                f"after restart {n} ({sig.name}) a consumer saw {sorted(seen & set(lines))}, which no slave has"
            hidden = status_value(pair, pair.m_port, "unconfirmedBytes")
            assert hidden and hidden > 0, f"brokerStatus unconfirmedBytes={hidden} with records hidden"
        pair.procs["slave"].send_signal(signal.SIGCONT)
        wait_for(lambda: status_value(pair, pair.m_port, "unconfirmedBytes") == 0, 60,
                 "the slave to acknowledge what the master held back")
        # The returning slave says when it holds what the master had at its hello.
        def caught_up():
            with open(os.path.join(pair.dir, "slave.log"), errors="replace") as f:
                return re.findall(r"caught up with master \S+: copied (\d+) bytes in ([0-9.]+) s",
                                  f.read())
        copies = wait_for(caught_up, 30, "the slave to log that it caught up")
        assert any(int(n) > 0 for n, _ in copies), copies
        seen = consume_all(pair, "Gap", "GapHealed")
        assert set(lines) | {"warmup"} <= seen, f"missing after the slave returned: {sorted(set(lines) - seen)}"
    finally:
        pair.stop()


if __name__ == "__main__":
    main([test_redirect_to_slave_and_back, test_link_cut_and_heal,
          test_sync_master_shows_nothing_unacknowledged_across_restarts,
          test_slow_slave_catches_up_over_one_connection])
