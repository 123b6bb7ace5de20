"""Store crash tests with real processes (issue: foundation, acceptance 3 and 4).

Crash: a writer appends with SYNC_FLUSH and prints every acknowledged record;
it is killed with SIGKILL at random moments, at least 20 times; after each
kill `ferry-store verify` recovers the store and checks that every record
acknowledged so far is readable and intact, that no partial record is
visible, and that the consume queues agree with the commit log. Runs on both
I/O backends (io_uring and the thread-pool fallback).

Torn tail: the last segment's tail is damaged as after lost unsynced pages
(garbage, zeros, a cut file); recovery must truncate at a record boundary
and the store must keep working.
"""
import os
import random

from harness import Proc, fresh_dir, main, run, wait_for

KILLS_PER_BACKEND = 12  # 24 kills per run across both backends
SEGMENT = 256 * 1024    # small segments: many roll-overs per run


def tool(args):
    return os.path.join(args.bin, "ferry-store")


def env_for(backend):
    env = dict(os.environ)
    env["FERRY_AIO_BACKEND"] = backend
    return env


def crash_loop(args, backend):
    rnd = random.Random(args.seed if args.seed is not None else random.randrange(1 << 30))
    d = fresh_dir(args.tmp, f"crash-{backend}")
    store = os.path.join(d, "store")
    acked_path = os.path.join(d, "acked.txt")
    open(acked_path, "w").close()
    seq = 0
    for kill in range(KILLS_PER_BACKEND):
        out = os.path.join(d, f"writer-{kill}.out")
        size = rnd.choice([64, 200, 1000, 5000])
        w = Proc([tool(args), "write", "-d", store, "--sync", "--size", str(size),
                  "--inflight", str(rnd.choice([1, 8, 64])), "--segment-size", str(SEGMENT),
                  "--start-seq", str(seq)], out, env=env_for(backend))
        target = rnd.randint(1, 400)
        wait_for(lambda: len(w.lines()) >= target or w.p.poll() is not None, 60,
                 f"{target} acks from the writer")
        assert w.p.poll() is None, f"writer exited early: {w.stderr_text()}"
        w.kill9()
        lines = [l for l in w.lines() if l.startswith("ACK ") and len(l.split()) == 5]
        with open(acked_path, "a") as f:
            for l in lines:
                f.write(l + "\n")
        if lines:
            seq = int(lines[-1].split()[1]) + 1
        # Unacknowledged in-flight messages may or may not have survived; the
        # next writer continues after them so sequence numbers stay unique.
        seq += 64
        # No --segment-size: verify reads the size off the segment files.
        r = run([tool(args), "verify", "-d", store, "--acked", acked_path], timeout_s=120,
                check=False)
        assert r.returncode == 0, f"verify failed after kill {kill}:\n{r.stdout}\n{r.stderr}"
        assert "verify: OK" in r.stdout, r.stdout
        assert "UNCLEAN" in r.stderr, "recovery did not notice the unclean shutdown:\n" + r.stderr
    total = sum(1 for _ in open(acked_path))
    assert total > KILLS_PER_BACKEND, f"only {total} acknowledged records across all kills"


def test_crash_recovery_uring(args):
    crash_loop(args, "uring")


def test_crash_recovery_threads(args):
    crash_loop(args, "threads")


def last_segment(store):
    """The last segment holding data (the next one is preallocated, all zeros)."""
    cl = os.path.join(store, "commitlog")
    for n in sorted((n for n in os.listdir(cl) if n.isdigit()), reverse=True):
        if data_end(os.path.join(cl, n)) > 0:
            return os.path.join(cl, n)
    raise AssertionError("no segment holds data")


def write_clean(args, store, count, start_seq=0):
    r = run([tool(args), "write", "-d", store, "--sync", "--count", str(count), "--size", "300",
             "--segment-size", str(SEGMENT), "--start-seq", str(start_seq)])
    return [l for l in r.stdout.splitlines() if l.startswith("ACK ")]


def data_end(path):
    """Offset in the segment file after the last non-zero byte."""
    with open(path, "rb") as f:
        data = f.read()
    return len(data.rstrip(b"\0"))


def torn_tail(args, name, damage):
    d = fresh_dir(args.tmp, f"torn-{name}")
    store = os.path.join(d, "store")
    acks = write_clean(args, store, 150)
    seg = last_segment(store)
    end = data_end(seg)
    assert end > 0
    damage(seg, end)
    # Everything up to the damaged record must survive; the damage is
    # placed after the second-to-last record at the earliest.
    keep = os.path.join(d, "keep.txt")
    with open(keep, "w") as f:
        f.write("\n".join(acks[:-2]) + "\n")
    r = run([tool(args), "verify", "-d", store, "--acked", keep], check=False)
    assert r.returncode == 0 and "verify: OK" in r.stdout, r.stdout + r.stderr
    # The store keeps working after the truncation: more writes, all verified.
    more = write_clean(args, store, 50, start_seq=1000)
    with open(keep, "a") as f:
        f.write("\n".join(more) + "\n")
    r = run([tool(args), "verify", "-d", store, "--acked", keep], check=False)
    assert r.returncode == 0 and "verify: OK" in r.stdout, r.stdout + r.stderr


def test_torn_tail_garbage(args):
    def damage(seg, end):
        with open(seg, "r+b") as f:
            f.seek(end)
            f.write(os.urandom(3000))
    torn_tail(args, "garbage", damage)


def test_torn_tail_zeros_inside_last_record(args):
    def damage(seg, end):
        with open(seg, "r+b") as f:
            f.seek(end - 100)
            f.write(b"\0" * 100)
    torn_tail(args, "zeros", damage)


def test_torn_tail_cut_file(args):
    def damage(seg, end):
        os.truncate(seg, end - 50)
    torn_tail(args, "cut", damage)


def test_torn_tail_flipped_byte(args):
    def damage(seg, end):
        with open(seg, "r+b") as f:
            f.seek(end - 10)
            b = f.read(1)
            f.seek(end - 10)
            f.write(bytes([b[0] ^ 0x40]))
    torn_tail(args, "flip", damage)


if __name__ == "__main__":
    main([test_torn_tail_garbage, test_torn_tail_zeros_inside_last_record,
          test_torn_tail_cut_file, test_torn_tail_flipped_byte,
          test_crash_recovery_uring, test_crash_recovery_threads])
