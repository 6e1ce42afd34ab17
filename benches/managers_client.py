#!/usr/bin/env python3
"""An unmodified CPython manager client, timed: run by benches/managers.rs against a Rust
server and against a CPython server in the same run.

usage: managers_client.py PORT AUTHKEY_HEX N_CONNECT N_PAIRS
Prints one JSON line: medians in microseconds of connect() (TCP connect, both handshakes,
'dummy') and of one put+get pair on an established proxy.
"""
import json
import statistics
import sys
import time
from multiprocessing.managers import BaseManager


class QueueManager(BaseManager):
    pass


QueueManager.register("get_task_queue")


def main():
    port, key = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
    n_connect, n_pairs = int(sys.argv[3]), int(sys.argv[4])
    address = ("127.0.0.1", port)
    connect = []
    for _ in range(n_connect):
        m = QueueManager(address=address, authkey=key)
        t0 = time.perf_counter()
        m.connect()
        connect.append(time.perf_counter() - t0)
    m = QueueManager(address=address, authkey=key)
    m.connect()
    q = m.get_task_queue()
    q.put(0)
    q.get()
    pairs = []
    for i in range(n_pairs):
        t0 = time.perf_counter()
        q.put(i)
        q.get()
        pairs.append(time.perf_counter() - t0)
    print(json.dumps({
        "connect_us": statistics.median(connect) * 1e6,
        "put_get_us": statistics.median(pairs) * 1e6,
    }))


if __name__ == "__main__":
    main()
