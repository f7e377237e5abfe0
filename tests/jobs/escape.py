"""Leaves behind a process that escaped the job's session and still holds the output pipe.

The child calls setsid(), prints its PID and sleeps; the job's main process
exits only once the child is in its own session, so the runner's group kill
cannot reach it.
"""

import os
import time

child = os.fork()
if child == 0:
    os.setsid()
    print(os.getpid(), flush=True)
    time.sleep(300)
    os._exit(0)
while os.getsid(child) != child:
    time.sleep(0.01)
