"""Shared helpers for Ferry's integration tests.

Tests start real processes, wait on conditions with deadlines (never bare
sleeps), and kill with SIGKILL where the scenario says so. Each test script
takes --bin (the build's bin/ directory) and --tmp (a scratch directory) and
prints 'N passed, N failed' at the end.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args()


def wait_for(cond, timeout_s, what, interval_s=0.01):
    """Polls cond() until it returns a truthy value or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def fresh_dir(base, name):
    d = os.path.join(base, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


class Proc:
    """A child process with stdout captured to a file, readable while it runs."""

    def __init__(self, argv, out_path, env=None):
        self.out_path = out_path
        self.out = open(out_path, "wb")
        self.err_path = out_path + ".err"
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=self.err, env=env)

    def lines(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace").splitlines()

    def kill9(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        self._close()

    def wait(self, timeout_s):
        rc = self.p.wait(timeout=timeout_s)
        self._close()
        return rc

    def stderr_text(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def poll(self):
        return self.p.poll()

    def describe(self):
        return self.stderr_text()[-2000:]

    def _close(self):
        self.out.close()
        self.err.close()


def listen_port(proc, what, pattern, timeout_s=30):
    """The port in the first stdout line of proc matching pattern (group 1).
    proc: anything with lines(), poll() and describe(), as Proc."""
    rx = re.compile(pattern)

    def find():
        for line in proc.lines():
            m = rx.match(line)
            if m:
                return int(m.group(1))
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited before listening:\n{proc.describe()}")
        return None
    return wait_for(find, timeout_s, f"{what} to print its port", interval_s=0.02)


def run(argv, timeout_s=120, check=True):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def main(tests):
    """Runs test functions (each takes args), prints the summary, exits non-zero on failure."""
    args = parse_args()
    os.makedirs(args.tmp, exist_ok=True)
    passed = failed = 0
    for t in tests:
        name = t.__name__
        start = time.monotonic()
        try:
            t(args)
            passed += 1
            print(f"[ OK ] {name} ({time.monotonic() - start:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"[FAIL] {name}", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
