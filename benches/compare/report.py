#!/usr/bin/env python3
"""Renders the comparison: a markdown table (results.md) and a plot (plot.png) from the JSON
that main.rs and python.py printed in the same run. Stdlib only, except matplotlib for the
plot (run.sh installs it into a virtual environment under target/ when it is missing).

    python3 benches/compare/report.py RUST.json PYTHON.json OUT_DIR
"""

import json
import platform
import subprocess
import sys
from pathlib import Path

# key: (label, higher is better)
ROWS = {
    "process.start_join.fork": ("Process start+join, fork", False),
    "process.start_join.forkserver": ("Process start+join, forkserver", False),
    "process.start_join.spawn": ("Process start+join, spawn", False),
    "pipe.rtt.send_bytes_8B": ("Pipe round trip, 8 B send_bytes (one CPU)", False),
    "pipe.rtt.send_pickled": ("Pipe round trip, pickled (int, str) (one CPU)", False),
    "pipe.1mib.send_bytes": ("Pipe 1 MiB messages one way (one CPU)", True),
    "queue.16B": ("Queue, 16 B items, 1 producer -> 1 consumer", True),
    "queue.1mib": ("Queue, 1 MiB items", True),
    "lock.pair": ("Lock acquire+release, uncontended", False),
    "pool.apply_async_noop": ("Pool.apply_async of a no-op, 20 000 tasks", True),
    "pool.map_chunksize1": ("Pool.map, 100 000 items, chunksize=1", True),
    "pool.map_default": ("Pool.map, 100 000 items, default chunks", True),
    "manager.queue_rtt": ("Manager queue put+get, loopback (one CPU)", False),
}


def first_line(*cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return out.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def fmt(value, unit):
    if unit == "us":
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"
    if unit == "MB/s":
        return f"{value / 1000:.2f} GB/s" if value >= 1000 else f"{value:.0f} MB/s"
    if unit.endswith("/s"):
        return f"{value / 1e6:.2f} M {unit}" if value >= 1e6 else f"{value / 1e3:.1f} k {unit}"
    return f"{value:,.0f} {unit}"


def main():
    rust_path, python_path, out_dir = sys.argv[1:4]
    rust = json.loads(Path(rust_path).read_text())
    python = json.loads(Path(python_path).read_text())
    out = Path(out_dir)
    stamp = {
        "date": first_line("date", "-u", "+%Y-%m-%d %H:%M UTC"),
        "machine": f"{first_line('nproc')} CPUs, {platform.system()} {platform.release()}",
        "rustc": first_line("rustc", "--version"),
        "python": f"CPython {platform.python_version()}",
        "commit": first_line("git", "rev-parse", "--short", "HEAD"),
    }
    lines = [
        "# multiproc vs CPython multiprocessing",
        "",
        f"Measured {stamp['date']} on {stamp['machine']}, {stamp['rustc']}, {stamp['python']}, "
        f"commit {stamp['commit']}, both halves in one run of `bash benches/compare/run.sh`.",
        "",
        "| workload | CPython | multiproc | multiproc is |",
        "|---|---:|---:|---:|",
    ]
    labels, factors = [], []
    for key, (label, higher_better) in ROWS.items():
        if key not in rust or key not in python:
            continue
        r, p = rust[key], python[key]
        factor = r["value"] / p["value"] if higher_better else p["value"] / r["value"]
        verdict = f"{factor:.1f}× faster" if factor >= 1 else f"{1 / factor:.1f}× slower"
        lines.append(f"| {label} | {fmt(p['value'], p['unit'])} | "
                     f"{fmt(r['value'], r['unit'])} | {verdict} |")
        labels.append(label)
        factors.append(factor)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no plot (run.sh installs it)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.6))
    ax.barh(labels[::-1], factors[::-1], color="#b7410e")
    ax.set_xscale("log")
    ax.set_xlim(min(0.5, min(factors) / 2), max(factors) * 3)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel("speed-up over CPython's multiprocessing (log scale; 1 = as fast)")
    for y, f in enumerate(factors[::-1]):
        ax.text(f, y, f" {f:.1f}×", va="center", fontsize=8)
    ax.set_title("multiproc vs CPython's multiprocessing (higher is better)", fontsize=10)
    fig.text(0.01, 0.01, f"{stamp['date']}; {stamp['machine']}; {stamp['rustc']}; "
             f"{stamp['python']}; commit {stamp['commit']}", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out / "plot.png", dpi=110)
    print(f"wrote {out / 'plot.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
