"""Plays a daemon that dies with a job running: starts it, reports it, then dies.

Starts ``sh -c 'sleep 300 & echo $!; sleep 300'`` through a ProcessRunner,
waits until the background sleep's PID is in the log, prints
``{"ident", "pid", "child"}`` as JSON, then either exits at once without any
cleanup (``exit``) or blocks until the test SIGKILLs it (``hang``).

Usage: orphan_maker.py LOG_PATH exit|hang
"""

import json
import os
import sys
import time
from pathlib import Path

from orchestra.runners.process import ProcessRunner

log = Path(sys.argv[1])
log.parent.mkdir(parents=True, exist_ok=True)
handle = ProcessRunner(log.parent).start("orphan", {"command": ["sh", "-c", "sleep 300 & echo $!; sleep 300"]}, log)
deadline = time.monotonic() + 10
while not log.read_text().strip():
    if time.monotonic() > deadline:
        sys.exit("the job printed nothing")
    time.sleep(0.01)
child = int(log.read_text().split()[0])
print(json.dumps({"ident": handle.ident, "pid": handle.pid, "child": child}), flush=True)
if sys.argv[2] == "hang":
    sys.stdin.read()
os._exit(0)
