"""Writes to stdout and stderr in turn, then waits for a flag file before its last line.

Run with ``python -u`` so that every write reaches the pipe at once, in order.
Usage: chatty.py FLAG_FILE
"""

import os
import sys
import time

for i in range(3):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("done")
