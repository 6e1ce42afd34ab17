"""Starts unmodified CPython manager clients that block in a served get and are then SIGKILLed,
for tests/interop.rs (issue 12.1). Each client is forked from this process, which has imported
multiprocessing already, so that a run costs a fork rather than an interpreter start.

usage: dying_client.py PORT AUTHKEY_HEX
Commands on stdin, one per line; each is answered with one line on stdout:
  start blocking|timed  fork a client that calls q.get() or q.get(timeout=30) -> "started PID"
  kill                  SIGKILL that client and reap it                      -> "killed SIGNAL"
"""
import os
import signal
import sys
from multiprocessing.managers import BaseManager


class QueueManager(BaseManager):
    pass


QueueManager.register("q")


def client(port, authkey, timed):
    m = QueueManager(address=("127.0.0.1", port), authkey=authkey)
    m.connect()
    q = m.q()
    if timed:
        q.get(timeout=30)
    else:
        q.get()
    os._exit(0)  # only reached if an item came: the test then fails on the missing item


def main():
    port, authkey = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
    pid = None
    for line in sys.stdin:
        command = line.split()
        if command[0] == "start":
            pid = os.fork()
            if pid == 0:
                try:
                    client(port, authkey, command[1] == "timed")
                finally:
                    os._exit(1)
            print("started", pid, flush=True)
        elif command[0] == "kill":
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            print("killed", os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
        else:
            raise SystemExit(f"unknown command {line!r}")


if __name__ == "__main__":
    main()
