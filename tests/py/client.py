"""An unmodified-style CPython manager client, run by tests/interop.rs against a Rust server.

usage: client.py PORT AUTHKEY_HEX FORM SCENARIO
Prints "ok <details>" and exits 0 when every check of SCENARIO held.
"""
import datetime
import faulthandler
import gc
import queue
import sys
import threading
import time
from multiprocessing.context import AuthenticationError
from multiprocessing.managers import (AcquirerProxy, BarrierProxy, BaseManager, ConditionProxy,
                                      EventProxy, RemoteError)

import mp_compat


class QueueManager(BaseManager):
    pass


QueueManager.register("get_task_queue")
QueueManager.register("get_result_queue")
QueueManager.register("get_bounded_queue")
QueueManager.register("Queues")
QueueManager.register("Queue", create_method=False)  # the typeid of '#PROXY' replies
# What SyncManager registers (its proxy types), served by a Rust register_sync_types().
QueueManager.register("Event", proxytype=EventProxy)
for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
    QueueManager.register(name, proxytype=AcquirerProxy)
QueueManager.register("Condition", proxytype=ConditionProxy)
QueueManager.register("Barrier", proxytype=BarrierProxy)


def expect(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc as e:
        return e
    raise AssertionError(f"{fn} did not raise {exc.__name__}")


def full_session(m):
    q = m.get_task_queue()
    values = [None, True, False, 0, 255, 65535, -5, 2**31, 2**70, -2**70, 1.5, -0.0,
              "h\u00e9llo \u2603", "", b"", bytes(range(256)), b"x" * 300, bytearray(b"ab"),
              (1, "x", b"y", None, 2.5, True), [1, [2, [3]]], {"a": 1, 2: (3,)}, {1, 2, 3},
              frozenset({"f"}), {"nested": [{"deep": (1, {2})}]},
              datetime.date(2024, 1, 2)]  # a Python object: carried inertly by the Rust server
    for v in values:
        q.put(v)
        got = q.get(timeout=10)
        assert got == v and type(got) is type(v), (v, got)
    # S3: get with a timeout on an empty queue raises queue.Empty after the timeout
    t0 = time.monotonic()
    expect(queue.Empty, q.get, timeout=0.2)
    assert time.monotonic() - t0 >= 0.15
    expect(queue.Empty, q.get, True, 0)
    expect(queue.Empty, q.get, False)
    expect(queue.Empty, q.get_nowait)
    # S5
    e = expect(ValueError, q.get, timeout=-1)
    assert "non-negative" in str(e), e
    expect(TypeError, q.put, item=1, bogus=2)
    # S4, S6 and MGR-07: bounded queue of 2
    b = m.get_bounded_queue()
    b.put(1)
    b.put("two", block=True, timeout=1)
    assert b.qsize() == 2 and b.full() and not b.empty()
    expect(queue.Full, b.put_nowait, 3)
    expect(queue.Full, b.put, 3, timeout=0.1)
    assert b.get() == 1 and b.get() == "two"
    assert b.empty() and not b.full()
    # task_done / join: two items were put on b, both taken
    b.task_done()
    b.task_done()
    b.join()
    expect(ValueError, b.task_done)
    # S13: an unexposed method, reached around the proxy's own check
    expect(RemoteError, q._callmethod, "_private")
    # S12: a blocked get in one thread is served by a put from another connection
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    t.start()
    time.sleep(0.1)
    q2 = m.get_task_queue()  # S8: second proxy, second thread, second proxy connection
    q2.put("late")
    t.join(15)
    assert got == ["late"], got
    # S7: dropping the proxies releases the server's references
    del q, q2, b, e, t
    gc.collect()  # exceptions kept above reference the proxies through their tracebacks
    n = m._number_of_objects()
    assert n == 0, n
    return "full"


def worker(m):
    """The tutorial worker: squares tasks from a Rust master until a None arrives."""
    tasks, results = m.get_task_queue(), m.get_result_queue()
    n = 0
    while True:
        x = tasks.get(timeout=30)
        if x is None:
            break
        results.put(f"{x} * {x} = {x * x}")
        n += 1
    return f"worker did {n}"


def roundtrip28(m):
    q = m.get_task_queue()
    item = (1, "x", b"y", None, 2.5, True)
    q.put(item)
    got = q.get(timeout=10)
    assert got == item, got
    return "roundtrip"


def proxies(m):
    """method_to_typeid: Queues.queue(name) answers '#PROXY'; the new proxies work, and
    dropping them all releases every server object."""
    qs = m.Queues()
    a = qs.queue("a")
    a.put(1)
    b = qs.queue("a")  # the same queue, through a second server object
    assert b.get(timeout=10) == 1
    expect(queue.Empty, a.get, timeout=0.05)
    other = qs.queue("other")
    other.put("x")
    assert a.qsize() == 0 and other.qsize() == 1
    del qs, a, b, other
    gc.collect()
    n = m._number_of_objects()
    assert n == 0, n
    return "proxies"


def sync(m):
    """MGR-10 with SyncManager's own proxy types against a Rust server."""
    e = m.Event()
    assert not e.is_set()
    e.set()
    assert e.is_set() and e.wait(1) is True
    e.clear()
    assert e.wait(0.01) is False
    lock = m.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(True, 0.05) is False
    lock.release()
    expect(RuntimeError, lock.release)  # releasing an unheld lock
    with lock:
        assert lock.acquire(False) is False
    r = m.RLock()
    assert r.acquire() and r.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(r.acquire(timeout=0.05)))
    t.start()
    t.join(15)
    assert got == [False], got  # another thread (another connection) is not the owner
    r.release()
    r.release()
    expect(RuntimeError, r.release)
    s = m.Semaphore(2)
    assert s.acquire() and s.acquire() and s.acquire(timeout=0.05) is False
    s.release()
    s.release()
    b = m.BoundedSemaphore(1)
    assert b.acquire()
    b.release()
    expect(ValueError, b.release)
    c = m.Condition()
    expect(RuntimeError, c.notify)
    with c:
        assert c.wait(0.01) is False
        assert c.wait_for(lambda: True)  # ConditionProxy loops over wait on the client
    woken = []

    def waiter():
        with c:
            woken.append(c.wait(30))

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 20
    while t.is_alive() and time.monotonic() < deadline:
        with c:
            c.notify()
        time.sleep(0.01)
    t.join(15)
    assert woken == [True], woken
    bar = m.Barrier(2)
    assert bar.parties == 2 and not bar.broken and bar.n_waiting == 0
    idx = []
    t = threading.Thread(target=lambda: idx.append(bar.wait(30)))
    t.start()
    idx.append(bar.wait(30))
    t.join(15)
    assert sorted(idx) == [0, 1], idx
    expect(threading.BrokenBarrierError, bar.wait, 0.05)
    assert bar.broken
    bar.reset()
    assert not bar.broken
    bar.abort()
    expect(threading.BrokenBarrierError, bar.wait)
    del e, lock, r, s, b, t, c, bar
    gc.collect()
    n = m._number_of_objects()
    assert n == 0, n
    return "sync"


def main():
    faulthandler.dump_traceback_later(60, exit=True)  # a hang becomes a failure with a stack
    port, key, form, scenario = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
    used = mp_compat.force(form)
    m = QueueManager(address=("127.0.0.1", port), authkey=key)
    if scenario == "wrongkey":
        expect(AuthenticationError, m.connect)
        print("ok wrongkey", used)
        return
    m.connect()
    detail = {"full": full_session, "worker": worker, "roundtrip": roundtrip28,
              "proxies": proxies, "sync": sync}[scenario](m)
    print("ok", detail, used, "server-challenge=" + ",".join(sorted(set(mp_compat.SEEN))))


if __name__ == "__main__":
    main()
