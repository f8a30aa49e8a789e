"""``python -m fedopt.sweep.pool_worker FD``: the entry point of a pool worker process.

A module of its own, which the package does not import, so that ``-m`` runs it once
(see :func:`fedopt.sweep.worker.worker_main`).
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection

from fedopt.sweep.worker import worker_main

if __name__ == "__main__":
    worker_main(Connection(int(sys.argv[1])))
    # every result is sent and every run directory closed: skip the interpreter's
    # teardown (a second or two with torch loaded)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
