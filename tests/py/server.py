"""An unmodified-style CPython manager server (manager.start()), run by tests/interop.rs for a
Rust client.

usage: server.py AUTHKEY_HEX FORM
Prints "port <n> <form>" once serving. Then reads commands on stdin:
  drain N   -> gets N items from the task queue (its own proxy) and prints them: "items <repr>"
  count     -> prints "objects <number_of_objects>"
  exit      -> shuts the server down and exits 0
"""
import queue
import sys
from multiprocessing.managers import BaseManager, BaseProxy

import mp_compat

task_queue = queue.Queue()
bounded_queue = queue.Queue(maxsize=2)


class QueueManager(BaseManager):
    pass


def get_task_queue():
    return task_queue


def get_bounded_queue():
    return bounded_queue


class Queues:
    """Named queues: queue(name) answers with a proxy ('#PROXY', method_to_typeid)."""

    def __init__(self):
        self.queues = {}

    def queue(self, name):
        return self.queues.setdefault(name, queue.Queue())


def baz():
    """A generator served through an IteratorProxy (CPython's _TestMyManager.test_mymanager)."""
    for i in range(10):
        yield i * i


class IteratorProxy(BaseProxy):
    _exposed_ = ("__next__",)

    def __iter__(self):
        return self

    def __next__(self):
        return self._callmethod("__next__")


QueueManager.register("get_task_queue", callable=get_task_queue)
QueueManager.register("baz", callable=baz, proxytype=IteratorProxy)
QueueManager.register("Queues", callable=Queues, method_to_typeid={"queue": "Queue"})
QueueManager.register("Queue", create_method=False)
QueueManager.register("get_bounded_queue", callable=get_bounded_queue)


def main():
    key, form = bytes.fromhex(sys.argv[1]), sys.argv[2]
    used = mp_compat.force(form)
    m = QueueManager(address=("127.0.0.1", 0), authkey=key)
    m.start()
    print("port", m.address[1], used, flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "drain":
            q = m.get_task_queue()
            items = [q.get(timeout=10) for _ in range(int(cmd[1]))]
            del q
            print("items", repr(items), flush=True)
        elif cmd[0] == "count":
            print("objects", m._number_of_objects(), flush=True)
        elif cmd[0] == "exit":
            break
    m.shutdown()
    print("bye", flush=True)


if __name__ == "__main__":
    main()
