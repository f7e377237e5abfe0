"""Reacts to SIGTERM as asked, after printing "ready" (so tests signal only once it is set up).

Usage: sigterm.py default|handle|ignore
"""

import signal
import sys


def _handle(signum: int, frame: object) -> None:
    print("cleaning up", flush=True)
    sys.exit(0)


mode = sys.argv[1]
if mode == "handle":
    signal.signal(signal.SIGTERM, _handle)
elif mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    signal.pause()
