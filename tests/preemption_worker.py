"""One process of a fake 2-process training loop for tests/test_preemption.py: jax.distributed,
a host-blocking collective per step (so processes stay within a step of each other), and a
tlx.preemption.Watch. Process 1 sends itself SIGTERM during "setup", before its loop starts.

  PYTHONPATH=. python tests/preemption_worker.py PROCESS_ID PORT START_STEP LAST_STEP

Prints `stopped at N` (the Watch said stop) or `finished at N`.
"""

import os
import signal
import sys
import time

import jax

from tlx import preemption

process_id, port, start, last = map(int, sys.argv[1:5])
preemption.listen()  # as tlx.train's CLI does: before jax.distributed.initialize
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
from jax.experimental import multihost_utils  # noqa: E402

if process_id == 1:
    os.kill(os.getpid(), signal.SIGTERM)  # during setup: must not be lost
    time.sleep(1.0)  # setup goes on; process 0 is in its loop, blocked on our first step
with preemption.Watch(start) as watch:
    for step in range(start + 1, last + 1):
        multihost_utils.process_allgather(jax.numpy.int32(step))  # blocks the main thread
        if watch.reached(step):
            print(f"stopped at {step}", flush=True)
            break
    else:
        print(f"finished at {last}", flush=True)
