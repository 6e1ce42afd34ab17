"""An unmodified-style CPython manager client, run by tests/interop.rs against a Rust server.

usage: client.py PORT AUTHKEY_HEX FORM SCENARIO
Prints "ok <details>" and exits 0 when every check of SCENARIO held.
"""
import datetime
import faulthandler
import gc
import multiprocessing
import queue
import sys
import threading
import time
from multiprocessing.context import AuthenticationError
from multiprocessing.managers import (AcquirerProxy, ArrayProxy, BarrierProxy, BaseManager,
                                      ConditionProxy, DictProxy, EventProxy, IteratorProxy,
                                      ListProxy, NamespaceProxy, RemoteError, ValueProxy)

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
QueueManager.register("list", proxytype=ListProxy)
QueueManager.register("dict", proxytype=DictProxy)
QueueManager.register("Namespace", proxytype=NamespaceProxy)
QueueManager.register("Value", proxytype=ValueProxy)
QueueManager.register("Array", proxytype=ArrayProxy)
QueueManager.register("Iterator", proxytype=IteratorProxy)


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


def containers(m):
    """MGR-11 with SyncManager's own proxy types against a Rust server
    (TestSyncManagerTypes.test_list, test_dict, test_value, test_array, test_namespace)."""
    o = m.list()
    o.append(5)
    assert o[0] == 5 and o.count(5) == 1 and o.index(5) == 0
    o.sort()
    o.reverse()
    for _ in o:
        pass
    assert len(o) == 1 and o.pop(0) == 5 and len(o) == 0
    lst = m.list([3, 1, 2])
    lst.sort()
    assert lst[:] == [1, 2, 3] and lst[::-1] == [3, 2, 1] and lst[-1] == 3
    lst += [4]
    lst.extend((5,))
    lst.insert(0, 0)
    lst.remove(4)
    assert list(lst) == [0, 1, 2, 3, 5] and 3 in lst and 99 not in lst
    expect(ValueError, lst.remove, 99)
    expect(IndexError, lst.__getitem__, 99)
    lst[0] = "zero"
    expect(TypeError, lst.sort)  # str and int do not order
    del lst[0]
    lst.sort(reverse=True)
    assert lst[:] == [5, 3, 2, 1]
    d = m.dict()
    d["foo"] = 5
    assert len(d) == 1 and d["foo"] == 5 and d.get("foo") == 5
    assert list(d.items()) == [("foo", 5)] and list(d.keys()) == ["foo"]
    assert list(d.values()) == [5] and d.copy() == {"foo": 5}
    assert d.popitem() == ("foo", 5) and len(d) == 0
    d.update({1: "a", (2, 3): "b"}, x=1)
    assert d[1.0] == "a" and d[(2, 3)] == "b" and d["x"] == 1 and d.get("nope") is None
    assert sorted(map(repr, d)) == ["'x'", "(2, 3)", "1"]  # iter(d): a '#PROXY' Iterator
    expect(KeyError, d.__getitem__, "missing")
    del d[1]
    assert 1 not in d and d.setdefault("y", 7) == 7 and d.pop("y") == 7
    v = m.Value("i", 1)
    assert v.value == 1 and v.get() == 1
    v.set(2)
    assert v.value == 2
    v.value = 3
    assert v.get() == 3
    a = m.Array("i", [0, 1])
    assert a[0] == 0 and a[1] == 1 and len(a) == 2 and list(a) == [0, 1]
    a[0] = 7
    assert a[0] == 7
    expect(TypeError, a.__setitem__, 0, "x")
    ns = m.Namespace()
    ns.x = 0
    ns.y = 1
    assert ns.x == 0 and ns.y == 1
    del ns.x
    expect(AttributeError, getattr, ns, "x")
    # Proxies inside containers (test_list_proxy_in_list, test_dict_proxy_nested, and a
    # queue stored in a served list): a proxy rebuilt from stored data authenticates with
    # the process's authkey, as CPython's own rebuilt proxies do.
    multiprocessing.current_process().authkey = m._authkey
    q = m.get_task_queue()
    box = m.list()
    box.append(q)
    del q
    gc.collect()  # the server still holds the queue for the stored proxy
    inner = box[0]
    inner.put("stored")
    assert inner.get(timeout=10) == "stored"
    holder = m.dict(queue=inner)
    holder["queue"].put(1)
    assert inner.get(timeout=10) == 1
    pets = m.dict(ferrets=2, hamsters=4)
    supplies = m.dict(water=10, feed=3)
    nest = m.dict(pets=pets, supplies=supplies)
    assert nest["supplies"]["water"] == 10 and nest["pets"]["ferrets"] == 2
    outer = m.list([m.list(range(3)) for _ in range(3)])
    assert [x[:] for x in outer] == [[0, 1, 2]] * 3
    outer[0][-1] = 55
    assert outer[0][:] == [0, 1, 55] and outer[1][:] == [0, 1, 2]
    del o, lst, d, v, a, ns, box, inner, holder, pets, supplies, nest, outer
    gc.collect()
    n = m._number_of_objects()
    assert n == 0, n
    return "containers"


def oversize(m):
    """Issue 12.3: a put over a Rust server's 1 MiB frame cap raises the ValueError the server
    answers with, naming the size and the limit (not a dead connection)."""
    q = m.get_task_queue()
    e = expect(ValueError, q.put, b"x" * (2 << 20))
    assert e.limit == 1 << 20 and e.size > 2 << 20, vars(e)
    assert str(e) == f"message of {e.size} bytes exceeds the limit of {e.limit} bytes", str(e)
    return "oversize"


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
              "proxies": proxies, "sync": sync,
              "containers": containers, "oversize": oversize}[scenario](m)
    print("ok", detail, used, "server-challenge=" + ",".join(sorted(set(mp_compat.SEEN))))


if __name__ == "__main__":
    main()
