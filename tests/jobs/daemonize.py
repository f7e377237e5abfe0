"""Daemonizes a process the classic way and exits: fork, setsid, fork again, stdio to /dev/null.

The main process prints the daemon's PID once the daemon runs in another
session (the middle process's, which has exited), with none of the job's descriptors: nothing holds the job's output
pipe and nothing is left in its process group.
"""

import os
import sys
import time

read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(write_end, str(os.getpid()).encode())
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2, read_end, write_end):
            os.dup2(null, fd) if fd <= 2 else os.close(fd)
        time.sleep(300)
    os._exit(0)
os.close(write_end)
daemon = int(os.read(read_end, 32))
while os.getsid(daemon) == os.getsid(0):  # the daemon's session is the middle process's
    time.sleep(0.01)
print(daemon, flush=True)
sys.exit(0)
