#!/usr/bin/env python3
"""Python's multiprocessing.Pool on the trivial-task throughput workloads of benches/pool_throughput.rs.

Prints one JSON object: {"python": version, "processes": n, "<workload>": items per second, ...}.
Run by `cargo bench --bench pool_throughput`, which measures multiproc's Pool on the same
workloads in the same run and prints the ratios. Stdlib only.

    python3 benches/pool_py.py [--processes N] [--tasks N] [--items N]
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import time


def noop(x):
    return None


def square(x):
    return x * x


def best_of(runs, fn):
    """Items per second of the fastest of `runs` runs of fn() -> item count."""
    best = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with mp.Pool(args.processes) as pool:
        pool.map(square, range(100))  # warm up: every worker has started

        def apply_async_noop():
            results = [pool.apply_async(noop, (i,)) for i in range(args.tasks)]
            for r in results:
                r.get()
            return args.tasks

        def map_chunksize_1():
            return len(pool.map(square, range(args.items), chunksize=1))

        def map_default():
            return len(pool.map(square, range(args.big)))

        out = {
            "python": platform.python_version(),
            "start_method": mp.get_start_method(),
            "processes": args.processes,
            "apply_async_noop": best_of(args.runs, apply_async_noop),
            "map_chunksize_1": best_of(args.runs, map_chunksize_1),
            "map_default_chunks": best_of(args.runs, map_default),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
