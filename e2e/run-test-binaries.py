#!/usr/bin/env python3
"""Runs every test binary of the workspace, several at a time, as `cargo test --workspace` would
one after another: each in its package's directory, with its output printed whole when it ends.

Most suites spend their time waiting (readiness delays, pauses, watches), not computing: the
slowest one uses about a quarter of a core. Running `JOBS` binaries at once (default 2) keeps the
machine busy without changing any test. The binaries that took longest last time start first.

Usage: e2e/run-test-binaries.py [JOBS]. Exit status 0 only if every binary passed.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# How long each binary took: the last run's, else the figures committed beside this script.
TIMES = os.path.join(ROOT, "target", "test-binary-seconds.json")
SEED_TIMES = os.path.join(ROOT, "e2e", "test-binary-seconds.json")


def binaries():
    """(name, path, package directory) of every test binary, built if needed."""
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test"):
            continue
        exe = msg.get("executable")
        if not exe:
            continue
        target = msg["target"]
        kind = target["kind"][0]
        src = os.path.relpath(target["src_path"], ROOT)
        label = f"{src} ({kind})"
        found.append((label, exe, os.path.dirname(msg["manifest_path"])))
    return found


def main():
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("SLUICE_TEST_JOBS", "2"))
    found = binaries()
    last = {}
    for path in (SEED_TIMES, TIMES):
        try:
            with open(path) as f:
                last.update(json.load(f))
        except (OSError, ValueError):
            pass
    # Longest first: the pool then ends with short binaries filling the gaps.
    found.sort(key=lambda b: -last.get(b[0], 0.0))
    lock = threading.Lock()
    results = {}

    def run(binary):
        label, exe, cwd = binary
        env = dict(os.environ, CARGO_MANIFEST_DIR=cwd)
        started = time.monotonic()
        proc = subprocess.run([exe], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        took = time.monotonic() - started
        with lock:
            print(f"\n     Ran {label} in {took:.1f}s (exit {proc.returncode})", flush=True)
            print(proc.stdout, end="", flush=True)
        results[label] = (proc.returncode, took, proc.stdout)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(run, found))

    passed = failed = ignored = 0
    for code, _, out in results.values():
        for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", out):
            passed += int(m.group(1))
            failed += int(m.group(2))
            ignored += int(m.group(3))
    broken = sorted(label for label, (code, _, _) in results.items() if code != 0)
    try:
        with open(TIMES, "w") as f:
            json.dump({label: took for label, (_, took, _) in results.items()}, f, indent=1)
    except OSError:
        pass
    print(f"\n{len(results)} test binaries, {jobs} at a time, in {time.monotonic() - started:.0f}s: "
          f"{passed} passed, {failed} failed, {ignored} ignored")
    if broken:
        print("failed: " + ", ".join(broken))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
