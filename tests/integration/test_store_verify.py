"""`ferry-store verify` on a real broker's store.

A broker with small, non-default files (mappedFileSizeCommitLog 1 MiB, so
the log spans several segments; mappedFileSizeConsumeQueue 4000 bytes, 200
entries a file, so queues span several files) takes messages with random
bodies for three topics (one created with 4 queues and a tag, one with 2
queues and keys, one created automatically) from mqproduce, and for a
fourth that is then deleted (its records stay in the log, its queues go),
and is stopped with SIGTERM. Then:

  1. verify -c broker.conf and verify -d DIR (sizes read off the files) say
     OK, with one line per topic giving the queues and entries mqproduce
     reported, and the deleted topic's records as unqueued;
  2. -c with another mappedFileSizeCommitLog or mappedFileSizeConsumeQueue
     fails before anything is opened, and no file changes;
  3. damage fails verify, which names it: a flipped byte in a record in the
     middle of the first segment (below the checkpoint, so recovery leaves
     it), a consume-queue entry pointing at another topic's record, an entry
     pointing at the next record of its queue, a queue's last file deleted
     (records without their entries);
  4. the first segment deleted, as retention would: the entries pointing
     into it count as expired, verify says OK;
  5. a DIR that holds no store fails with exit 2 and creates nothing.

Each change is made to a copy of the store.
"""
import hashlib
import os
import random
import re
import shutil
import struct

from harness import fresh_dir, main, run
from test_broker_e2e import Cluster, create_topic, mqadmin, produce, slow

SEGMENT = 1 << 20
CQ_FILE = 4000  # bytes: 200 entries of 20
STORE_KEYS = [f"mappedFileSizeCommitLog={SEGMENT}", f"mappedFileSizeConsumeQueue={CQ_FILE}",
              "maxHashSlotNum=50000", "maxIndexNum=400000"]
# topic: (queues to create, 0 = created by the first send; messages; mqproduce options)
TOPICS = {"VerifyA": (4, 1500, ["--tag", "TagA"]),
          "VerifyB": (2, 900, ["--key", "k1 k2"]),
          "VerifyAuto": (0, 600, [])}
GONE = ("VerifyGone", 200)  # created, sent to, deleted


def tool(args):
    return os.path.join(args.bin, "ferry-store")


def verify(args, *argv):
    return run([tool(args), "verify"] + list(argv), timeout_s=60 * slow(args), check=False)


def summary(stdout):
    """{topic: (queues, entries, expired, unqueued)} from verify's per-topic lines."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^topic (\S+) queues=(\d+) entries=(\d+) expired=(\d+)"
                     r"(?: unqueued=(\d+))?$", line)
        if m:
            out[m.group(1)] = tuple(int(x or 0) for x in m.groups()[1:])
    return out


def final(stdout):
    m = re.search(r"^verify: (OK|FAILED) records=(\d+) ", stdout, re.M)
    assert m, stdout
    return m.group(1), int(m.group(2))


def queue_entries(store):
    """{(topic, queueId): [(queue offset, phys, size, tag hash)]} read from the
    consume-queue files, written entries only."""
    out = {}
    root = os.path.join(store, "consumequeue")
    for topic in os.listdir(root):
        for qid in os.listdir(os.path.join(root, topic)):
            d = os.path.join(root, topic, qid)
            entries = []
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
                for i in range(len(data) // 20):
                    phys, size, tag = struct.unpack_from("<QIq", data, i * 20)
                    if size:
                        entries.append((int(name) // 20 + i, phys, size, tag))
            out[(topic, int(qid))] = entries
    return out


def put_entry(store, topic, qid, qoff, phys, size, tag):
    name = "%020d" % (qoff * 20 // CQ_FILE * CQ_FILE)
    with open(os.path.join(store, "consumequeue", topic, str(qid), name), "r+b") as f:
        f.seek(qoff * 20 % CQ_FILE)
        f.write(struct.pack("<QIq", phys, size, tag))


def snapshot(store):
    """Every file's content hash, by path: a verify that refused must change none."""
    out = {}
    for d, _, files in os.walk(store):
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), store)] = hashlib.sha1(f.read()).hexdigest()
    return out


def body(rnd):
    """Arbitrary bytes but '\\n' (mqproduce sends one line per message)."""
    return bytes(rnd.choice(range(256)) for _ in range(rnd.randint(1, 2000))).replace(b"\n", b"x")


def make_store(args):
    """Runs the broker, sends TOPICS, stops it; returns (store, conf, expected summary, total)."""
    rnd = random.Random(args.seed if args.seed is not None else random.randrange(1 << 30))
    c = Cluster(args, "verify", 1, STORE_KEYS)
    b = c.brokers[0]
    expected, total = {}, 0
    for topic, (queues, count, extra) in TOPICS.items():
        if queues:
            create_topic(c, topic, queues=queues)
        _, results, _ = produce(c, topic, [body(rnd) for _ in range(count)], *extra)
        per_queue = {}
        for r in results:
            per_queue[int(r.qid)] = per_queue.get(int(r.qid), 0) + 1
            assert int(r.offset) < per_queue[int(r.qid)], r  # offsets count up from 0
        expected[topic] = (len(per_queue), count, 0, 0)
        total += count
    create_topic(c, GONE[0], queues=2)
    produce(c, GONE[0], [body(rnd) for _ in range(GONE[1])])
    mqadmin(c, "deleteTopic", "-b", b.addr, "-t", GONE[0])
    expected[GONE[0]] = (0, 0, 0, GONE[1])
    total += GONE[1]
    assert b.proc.stop(30 * slow(args)) == 0, b.proc.describe()
    assert c.ns.proc.stop(30) == 0, c.ns.proc.describe()
    conf = os.path.join(c.dir, "broker.conf")
    with open(conf, "w") as f:
        f.write("\n".join(["brokerName=" + b.name, "storePathRootDir=" + b.store] + STORE_KEYS)
                + "\n")
    segments = [n for n in os.listdir(os.path.join(b.store, "commitlog")) if n.isdigit()]
    assert len(segments) >= 4, f"the log should span several segments: {segments}"
    return b.store, conf, expected, total


def copy_of(args, store, name):
    d = os.path.join(fresh_dir(args.tmp, "verify-copies-" + name), "store")
    shutil.copytree(store, d)
    return d


def test_verify_real_store(args):
    store, conf, expected, total = make_store(args)

    # 1. With the broker's config, and with the sizes read off the files.
    for argv in (["-c", conf], ["-d", store]):
        r = verify(args, *argv)
        assert r.returncode == 0, f"verify {argv}:\n{r.stdout}\n{r.stderr}"
        assert final(r.stdout) == ("OK", total), r.stdout
        assert summary(r.stdout) == expected, (summary(r.stdout), expected)
        assert "dropped_bytes=0 redispatched=0 unclean=0" in r.stdout, r.stdout
        assert f"verify: note: {GONE[1]} records have no consume queue" in r.stderr, r.stderr
    r = verify(args, "-d", store, "--quiet")
    assert r.returncode == 0 and not summary(r.stdout) and final(r.stdout)[0] == "OK", r.stdout

    # 2. A wrong size is refused before the store is opened: nothing changes.
    before = snapshot(store)
    for key, value in (("mappedFileSizeCommitLog", 2 * SEGMENT),
                       ("mappedFileSizeConsumeQueue", 3 * CQ_FILE)):
        wrong = conf + ".wrong"
        with open(wrong, "w") as f:
            f.write(open(conf).read() + f"{key}={value}\n")
        r = verify(args, "-c", wrong)
        assert r.returncode == 1, f"{key}={value}:\n{r.stdout}\n{r.stderr}"
        assert key in r.stderr and "nothing was changed" in r.stderr, r.stderr
        assert snapshot(store) == before, f"verify with {key}={value} changed the store"
    entries = queue_entries(store)

    # 3a. A flipped byte in the middle of the first segment.
    d = copy_of(args, store, "flip")
    at = SEGMENT // 2
    hit = [(t, q, o, p) for (t, q), es in entries.items() for (o, p, s, _) in es if p <= at < p + s]
    assert len(hit) == 1, hit
    topic, qid, qoff, phys = hit[0]
    with open(os.path.join(d, "commitlog", "%020d" % 0), "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x40]))
    r = verify(args, "-d", d)
    assert r.returncode == 1 and final(r.stdout)[0] == "FAILED", r.stdout + r.stderr
    assert f"commit log offset {phys}: no valid record" in r.stderr, r.stderr
    assert (f"topic {topic} queue {qid} offset {qoff}: entry points at phys {phys}, "
            "where no valid record starts") in r.stderr, r.stderr

    # 3b. An entry of VerifyA made VerifyB's entry of the same queue id and
    # offset (its record's size and tag hash too): only the topic tells.
    d = copy_of(args, store, "topic")
    _, pb, sb, tb = entries[("VerifyB", 0)][5]
    put_entry(d, "VerifyA", 0, 5, pb, sb, tb)
    r = verify(args, "-d", d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"topic VerifyA queue 0 offset 5: entry (phys {pb}) points at a record of topic "
            "VerifyB") in r.stderr, r.stderr

    # 3c. An entry pointing at its queue's next record.
    d = copy_of(args, store, "next")
    _, p11, s11, t11 = entries[("VerifyB", 1)][11]
    put_entry(d, "VerifyB", 1, 10, p11, s11, t11)
    r = verify(args, "-d", d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"topic VerifyB queue 1 offset 10: entry (phys {p11}) points at a record with queue "
            "offset 11") in r.stderr, r.stderr

    # 3d. A queue's last file deleted: its records have no entries.
    d = copy_of(args, store, "lostfile")
    n = len(entries[("VerifyA", 1)])
    assert n > CQ_FILE // 20, n
    last = (n - 1) * 20 // CQ_FILE * CQ_FILE
    os.unlink(os.path.join(d, "consumequeue", "VerifyA", "1", "%020d" % last))
    r = verify(args, "-d", d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"record of topic VerifyA queue 1 offset %d has no consume-queue entry "
                     r"\(the queue ends at %d\)" % (last // 20, last // 20), r.stderr), r.stderr

    # 4. Retention deleted the first segment: entries into it are expired.
    d = copy_of(args, store, "retention")
    os.unlink(os.path.join(d, "commitlog", "%020d" % 0))
    r = verify(args, "-d", d)
    assert r.returncode == 0, r.stdout + r.stderr
    want = {GONE[0]: (0, 0, 0, GONE[1])}  # sent last: far past the first segment
    for (t, _), es in entries.items():
        q, live, gone, _ = want.get(t, (0, 0, 0, 0))
        old = sum(1 for e in es if e[1] < SEGMENT)
        want[t] = (q + 1, live + len(es) - old, gone + old, 0)
    assert summary(r.stdout) == want, (summary(r.stdout), want)
    assert sum(x[2] for x in want.values()) > 0
    assert final(r.stdout) == ("OK", sum(x[1] + x[3] for x in want.values())), r.stdout

    # 5. No store: refused, nothing created.
    missing = os.path.join(args.tmp, "verify-no-such-store")
    shutil.rmtree(missing, ignore_errors=True)
    r = verify(args, "-d", missing)
    assert r.returncode == 2 and "no store" in r.stderr, r.stdout + r.stderr
    assert not os.path.exists(missing), "verify created the directory"
    empty = fresh_dir(args.tmp, "verify-empty-dir")
    r = verify(args, "-d", empty)
    assert r.returncode == 2 and "no store" in r.stderr, r.stdout + r.stderr
    assert os.listdir(empty) == [], os.listdir(empty)


if __name__ == "__main__":
    main([test_verify_real_store])
