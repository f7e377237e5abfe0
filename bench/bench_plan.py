"""Benchmark: validate+apply of new deployments and a no-change plan.

Prints each figure beside the bare PyYAML (C loader) parse time of the same
files, measured in the same run, so the ratio means something on a shared,
noisy machine. Targets (DESIGN.md): apply of 1,000 new deployments well
under 2 s; a no-change plan of 10,000 under 3 s.

    .venv/bin/python bench/bench_plan.py [--apply 1000] [--plan 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.specs.loader import spec_files
from orchestra.store import open_store

POOLS = """\
apiVersion: orchestra/v1
kind: WorkPool
metadata: {name: local}
spec: {type: process, concurrencyLimit: 8}
---
apiVersion: orchestra/v1
kind: WorkQueue
metadata: {name: critical}
spec: {pool: local, priority: 1}
"""

DEPLOYMENT = """\
---
apiVersion: orchestra/v1
kind: Deployment
metadata:
  name: job-{i}
  labels: {{team: team-{team}}}
spec:
  command: ["python", "-c", "print(1)", "{{{{ parameters.region }}}}"]
  pool: local
  queue: critical
  parameters: {{region: eu, size: {i}}}
  parameterSchema:
    type: object
    properties:
      region: {{type: string, enum: [eu, us]}}
      size: {{type: integer}}
  schedules:
    - cron: "{minute} {hour} * * *"
      timezone: Europe/Berlin
    - interval: 15m
  jobVariables: {{env: {{LOG_LEVEL: info}}}}
  retries: {{count: 1, delay: 30s}}
  timeout: 1h
"""


def generate(root: Path, count: int, per_file: int = 20) -> None:
    (root / "pools.yaml").write_text(POOLS)
    for start in range(0, count, per_file):
        docs = [DEPLOYMENT.format(i=i, team=i % 7, minute=i % 60, hour=i % 24)
                for i in range(start, min(start + per_file, count))]
        (root / f"deployments-{start // per_file:05d}.yaml").write_text("".join(docs))


def bare_parse(root: Path) -> float:
    start = time.perf_counter()
    for path in spec_files([root]):
        list(yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader))
    return time.perf_counter() - start


def measure(count: int, *, no_change: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "specs"
        root.mkdir()
        generate(root, count)
        store = open_store(f"sqlite:///{tmp}/bench.db")
        now = datetime.now(timezone.utc)
        if no_change:
            apply_plan(store, plan_specs(store, [root], prune=False, now=now))
        parse = bare_parse(root)
        start = time.perf_counter()
        result = plan_specs(store, [root], prune=False, now=now)
        if not no_change:
            apply_plan(store, result)
        elapsed = time.perf_counter() - start
        assert result.plan.has_changes != no_change
        store.close()
        return elapsed, parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apply", type=int, default=1000, help="deployments for the validate+apply figure")
    parser.add_argument("--plan", type=int, default=10000, help="deployments for the no-change plan figure")
    args = parser.parse_args()
    elapsed, parse = measure(args.apply, no_change=False)
    print(f"validate+apply {args.apply} new deployments: {elapsed:.3f} s "
          f"(bare PyYAML parse {parse:.3f} s, ratio {elapsed / parse:.1f}x; target < 2 s)")
    elapsed, parse = measure(args.plan, no_change=True)
    print(f"no-change plan of {args.plan} deployments:    {elapsed:.3f} s "
          f"(bare PyYAML parse {parse:.3f} s, ratio {elapsed / parse:.1f}x; target < 3 s)")


if __name__ == "__main__":
    main()
