#!/usr/bin/env python3
"""Print multiproc's benchmark figures against their raw baselines, as a markdown table.

Reads criterion's output of `cargo bench --bench process` (benches/process.rs) and of
`cargo bench --bench sync` (benches/sync.rs; its row says "no data" until that bench has run):
<target-dir>/criterion/<group>/<function>/new/estimates.json, taking the median point estimate
(nanoseconds per iteration). Every multiproc figure is compared with a baseline measured in the
same run, and the ratio is checked against the spec's target.

    cargo bench --bench process
    python3 benches/ratios.py                      # reads ./target
    python3 benches/ratios.py --target-dir "$CARGO_TARGET_DIR"

With CARGO_TARGET_DIR set, cargo writes criterion's output under that directory instead of
./target: pass it with --target-dir. Stdlib only.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MIB = 1 << 20

# (label, multiproc benchmark, baseline benchmark, kind, target)
#   kind "time": ratio = multiproc time / baseline time, PASS if ratio <= target
#   kind "throughput": ratio = multiproc bytes/s / baseline bytes/s, PASS if ratio >= target
ROWS = [
    ("fork: start+join", "spawn_join/multiproc/fork", "spawn_join/raw/fork_exit_waitpid", "time", 1.5),
    ("spawn: start+join", "spawn_join/multiproc/spawn", "spawn_join/raw/posix_spawn_self", "time", 1.5),
    ("forkserver: start+join", "spawn_join/multiproc/forkserver", "spawn_join/raw/fork_exit_waitpid", "time", 2.0),
    ("pipe RTT, send_bytes (same CPU)", "pipe_rtt/multiproc/send_bytes_same_cpu", "pipe_rtt/raw/socketpair_same_cpu", "time", 1.1),
    ("pipe RTT, pickled u64 (same CPU)", "pipe_rtt/multiproc/send_recv_pickled_same_cpu", "pipe_rtt/raw/socketpair_same_cpu", "time", 1.1),
    ("1 MiB bandwidth, send_bytes (same CPU)", "bandwidth_1mib/multiproc/send_bytes_same_cpu", "bandwidth_1mib/raw/socketpair_same_cpu", "throughput", 0.9),
    ("Lock acquire+release, uncontended", "lock_pair/multiproc/lock", "lock_pair/std/mutex", "time", 2.0),
]

REPO = Path(__file__).resolve().parent.parent


def run(*cmd):
    """A command's first output line, or a note saying why there is none."""
    try:
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
        return out.strip().splitlines()[0] if out.strip() else ""
    except (OSError, subprocess.CalledProcessError) as e:
        return f"unknown ({e.__class__.__name__})"


def estimates_path(criterion_dir, bench_id):
    """criterion writes group/function/parameter; a function id with '/' in it becomes '_'."""
    group, rest = bench_id.split("/", 1)
    for candidate in (rest, rest.replace("/", "_")):
        path = criterion_dir / group / candidate / "new" / "estimates.json"
        if path.is_file():
            return path
    return criterion_dir / group / rest / "new" / "estimates.json"


def median_ns(criterion_dir, bench_id):
    path = estimates_path(criterion_dir, bench_id)
    try:
        with open(path) as f:
            return float(json.load(f)["median"]["point_estimate"])
    except (OSError, KeyError, ValueError) as e:
        raise LookupError(f"{bench_id}: cannot read {path} ({e})") from None


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def fmt_rate(ns):
    return f"{MIB / (ns / 1e9) / 2**30:.2f} GiB/s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target-dir",
        default="./target",
        help="cargo's target directory (default ./target; use $CARGO_TARGET_DIR if you set it)",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 on any MISS")
    args = parser.parse_args()
    criterion_dir = Path(args.target_dir) / "criterion"

    dirty = run("git", "status", "--porcelain", "--untracked-files=no")
    commit = run("git", "rev-parse", "--short", "HEAD") + (" (+ uncommitted changes)" if dirty else "")
    print(f"- machine: {run('nproc')} CPUs, Linux {os.uname().release} ({os.uname().machine})")
    print(f"- rustc: {run('rustc', '--version')}")
    print(f"- commit: {commit}")
    print(f"- data: {criterion_dir.resolve()} (criterion median per iteration)")
    print()
    print("| measure | multiproc | baseline | ratio | target | result |")
    print("|---|---|---|---|---|---|")

    missing, misses = [], 0
    for label, ours_id, base_id, kind, target in ROWS:
        try:
            ours, base = median_ns(criterion_dir, ours_id), median_ns(criterion_dir, base_id)
        except LookupError as e:
            missing.append(str(e))
            print(f"| {label} | — | — | — | — | no data |")
            continue
        base_name = base_id.split("/", 1)[1]
        if kind == "time":
            ratio = ours / base
            ok = ratio <= target
            cells = (fmt_time(ours), f"{fmt_time(base)} ({base_name})", f"{ratio:.2f}×", f"≤ {target:g}×")
        else:
            ratio = base / ours  # throughput ratio = (bytes/ours) / (bytes/base)
            ok = ratio >= target
            cells = (fmt_rate(ours), f"{fmt_rate(base)} ({base_name})", f"{ratio:.0%}", f"≥ {target:.0%}")
        misses += not ok
        print(f"| {label} | " + " | ".join(cells) + f" | {'PASS' if ok else 'MISS'} |")

    if missing and len(missing) < len(ROWS):
        for m in missing:
            print(f"no data: {m}", file=sys.stderr)
    elif missing:
        print(file=sys.stderr)
        for m in missing:
            print(f"missing: {m}", file=sys.stderr)
        hint = os.environ.get("CARGO_TARGET_DIR")
        if hint and Path(hint).resolve() != Path(args.target_dir).resolve():
            print(f"CARGO_TARGET_DIR is set: try --target-dir {hint}", file=sys.stderr)
        else:
            print("run `cargo bench --bench process` first", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if args.strict and misses else 0)


if __name__ == "__main__":
    main()
