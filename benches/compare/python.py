#!/usr/bin/env python3
"""The Python half of the side-by-side comparison (issue 7): CPython's multiprocessing doing
the workloads of main.rs, printed as one JSON object on stdout. Kept to the standard library
and few imports: under forkserver and spawn every child re-imports this main module.

    python3 benches/compare/python.py [--quick]
"""

import json
import multiprocessing as mp
import os
import sys
import time


def noop():
    pass


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def start_join(method, n):
    ctx = mp.get_context(method)
    for _ in range(3):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        samples.append((time.perf_counter() - t) * 1e6)
        assert p.exitcode == 0
    return median(samples)


def echo(conn, pickled):
    # Stops on an empty message: a fork child also holds the parent's end of the pipe, so it
    # would never see end of stream (multiproc's fork children close theirs).
    while True:
        msg = conn.recv() if pickled else conn.recv_bytes()
        if not msg:
            return
        if pickled:
            conn.send(msg)
        else:
            conn.send_bytes(msg)


def round_trip(pickled, n, trials):
    here, there = mp.Pipe()
    child = mp.Process(target=echo, args=(there, pickled))
    child.start()
    there.close()
    value = (42, "abc")

    def one():
        if pickled:
            here.send(value)
            here.recv()
        else:
            here.send_bytes(b"8 bytes!")
            here.recv_bytes()

    for _ in range(1000):
        one()
    samples = []
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(n):
            one()
        samples.append((time.perf_counter() - t) * 1e6 / n)
    if pickled:
        here.send(None)
    else:
        here.send_bytes(b"")
    child.join()
    return median(samples)


def sink(conn, n):
    for _ in range(n):
        conn.recv_bytes()
    conn.send_bytes(b"done")


def bandwidth(n, trials):
    payload = bytes(1 << 20)
    samples = []
    for _ in range(trials):
        here, there = mp.Pipe()
        child = mp.Process(target=sink, args=(there, n))
        child.start()
        there.close()
        t = time.perf_counter()
        for _ in range(n):
            here.send_bytes(payload)
        here.recv_bytes()
        samples.append(n * (1 << 20) / (time.perf_counter() - t) / 1e6)
        child.join()
    return median(samples)


def noop_task(_):
    pass


def square(x):
    return x * x


def rate(items, trials, work):
    work()
    samples = []
    for _ in range(trials):
        t = time.perf_counter()
        work()
        samples.append(items / (time.perf_counter() - t))
    return median(samples)


def pool_rows(scale, rows):
    with mp.Pool(os.cpu_count()) as pool:
        n = scale(20000)
        print("  pool.apply_async_noop", file=sys.stderr)

        def apply_async():
            for r in [pool.apply_async(noop_task, (i,)) for i in range(n)]:
                r.get()

        rows["pool.apply_async_noop"] = (rate(n, 5, apply_async), "tasks/s")
        n = scale(100000)
        print("  pool.map", file=sys.stderr)
        rows["pool.map_chunksize1"] = (
            rate(n, 5, lambda: pool.map(square, range(n), chunksize=1)), "items/s")
        rows["pool.map_default"] = (rate(n, 5, lambda: pool.map(square, range(n))), "items/s")


def queue_consumer(q, done, n, runs):
    for _ in range(runs):
        for _ in range(n):
            q.get()
        done.send(None)


def queue_rate(length, n, trials):
    """One producer (here) and one consumer process: median items/s over `trials` runs."""
    q = mp.Queue()
    done, theirs = mp.Pipe()
    child = mp.Process(target=queue_consumer, args=(q, theirs, n, trials + 1))
    child.start()
    item = b"x" * length

    def work():
        for _ in range(n):
            q.put(item)
        done.recv()

    r = rate(n, trials, work)
    child.join()
    return r


def lock_pair(n):
    """An uncontended acquire+release pair of multiprocessing.Lock: median ns."""
    lock = mp.Lock()
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        samples.append((time.perf_counter() - t) * 1e9 / n)
    return median(samples)


_QUEUE = None


def _get_queue():
    return _QUEUE


def manager_round_trip(n):
    import queue
    from multiprocessing.managers import BaseManager

    global _QUEUE
    _QUEUE = queue.Queue()

    class QueueManager(BaseManager):
        pass

    QueueManager.register("get_queue", callable=_get_queue)
    manager = QueueManager(address=("127.0.0.1", 0), authkey=b"abc")
    manager.start()
    try:
        q = manager.get_queue()
        for _ in range(200):
            q.put(7)
            q.get()
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                q.put(7)
                q.get()
            samples.append((time.perf_counter() - t) * 1e6 / n)
        return median(samples)
    finally:
        manager.shutdown()


def main():
    quick = "--quick" in sys.argv
    scale = (lambda n: max(3, n // 10)) if quick else (lambda n: n)
    rows = {}
    for method, n in (("fork", 300), ("forkserver", 100), ("spawn", 30)):
        print(f"  process.start_join.{method}", file=sys.stderr)
        rows[f"process.start_join.{method}"] = (start_join(method, scale(n)), "us")
    pool_rows(scale, rows)
    print("  queue", file=sys.stderr)
    rows["queue.16B"] = (queue_rate(16, scale(250000), 5), "items/s")
    rows["queue.1mib"] = (queue_rate(1 << 20, scale(200), 5) * (1 << 20) / 1e6, "MB/s")
    print("  lock", file=sys.stderr)
    rows["lock.pair"] = (lock_pair(scale(1000000)), "ns")
    os.sched_setaffinity(0, {0})
    print("  manager.queue_rtt", file=sys.stderr)
    rows["manager.queue_rtt"] = (manager_round_trip(scale(2000)), "us")
    print("  pipe.rtt", file=sys.stderr)
    rows["pipe.rtt.send_bytes_8B"] = (round_trip(False, scale(20000), 5), "us")
    rows["pipe.rtt.send_pickled"] = (round_trip(True, scale(20000), 5), "us")
    print("  pipe.1mib", file=sys.stderr)
    rows["pipe.1mib.send_bytes"] = (bandwidth(scale(500), 5), "MB/s")
    print(json.dumps({k: {"value": round(v, 3), "unit": u} for k, (v, u) in rows.items()},
                     indent=2))


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
