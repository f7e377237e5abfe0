"""Writes N bytes of numbered lines to stdout, far more than a pipe buffer holds.

Usage: flood.py N
"""

import sys

total = int(sys.argv[1])
written = 0
i = 0
while written < total:
    line = f"line {i:08d} " + "x" * 48 + "\n"
    sys.stdout.write(line)
    written += len(line)
    i += 1
sys.stdout.flush()
