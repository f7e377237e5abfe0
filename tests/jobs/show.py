"""Prints, as one JSON line, its argv, working directory and the variables named in ORCHESTRA_SHOW."""

import json
import os
import sys

names = os.environ.get("ORCHESTRA_SHOW", "").split(",")
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {n: os.environ.get(n) for n in names}}))
