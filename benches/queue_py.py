#!/usr/bin/env python3
"""Python's multiprocessing.Queue on the workloads of benches/queue.rs.

One producer (this process) and one consumer process; timed from the first put until the
consumer reports it has taken the last item; median of --runs runs after a warm-up.
Prints one JSON object: {"python": version, "small_items_per_s": ..., "big_bytes_per_s": ...}.
Run by `cargo bench --bench queue`, which measures multiproc on the same workloads in the same
run and prints the ratios. Stdlib only.

    python3 benches/queue_py.py [--small-items N] [--big-items N] [--runs N]
"""

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import time

MIB = 1 << 20


def consume(q, done, n, runs):
    for _ in range(runs):
        for _ in range(n):
            q.get()
        done.send(None)


def rate(item, n, runs):
    q = mp.Queue()
    done, theirs = mp.Pipe()
    child = mp.Process(target=consume, args=(q, theirs, n, runs + 1))
    child.start()
    results = []
    for run in range(runs + 1):
        start = time.perf_counter()
        for _ in range(n):
            q.put(item)
        done.recv()
        took = time.perf_counter() - start
        if run:  # the first run warms up
            results.append(n * (len(item) if len(item) >= MIB else 1) / took)
    child.join()
    return statistics.median(results)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small-items", type=int, default=1_000_000)
    parser.add_argument("--big-items", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    small = rate(b"x" * 16, args.small_items // 4, args.runs)
    big = rate(b"x" * MIB, args.big_items, args.runs)
    print(json.dumps({
        "python": platform.python_version(),
        "start_method": mp.get_start_method(),
        "small_items_per_s": small,
        "big_bytes_per_s": big,
    }))


if __name__ == "__main__":
    main()
