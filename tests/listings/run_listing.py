"""Runs an unmodified tutorial listing (task_master.py / task_worker.py) on a free port.

The listings hard-code port 5000 and sleep a second per task. Their text is left exactly as
published; this shim only changes the world they run in: the address ('', 5000) or
('127.0.0.1', 5000) becomes ('127.0.0.1', PORT) (0: any free port, printed as "LISTENING n"
on stderr once a manager has started), and time.sleep is capped at 10 ms.

    python3 run_listing.py PORT SCRIPT
"""

import multiprocessing.managers as managers
import runpy
import sys
import time

LISTING_PORT = 5000


def main():
    port, script = int(sys.argv[1]), sys.argv[2]
    init, start = managers.BaseManager.__init__, managers.BaseManager.start

    def patched_init(self, address=None, *args, **kwargs):
        if address is not None and address[1] == LISTING_PORT:
            address = ("127.0.0.1", port)
        init(self, address, *args, **kwargs)

    def patched_start(self, *args, **kwargs):
        result = start(self, *args, **kwargs)
        print(f"LISTENING {self.address[1]}", file=sys.stderr, flush=True)
        return result

    managers.BaseManager.__init__ = patched_init
    managers.BaseManager.start = patched_start
    real_sleep = time.sleep
    time.sleep = lambda seconds: real_sleep(min(seconds, 0.01))
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
