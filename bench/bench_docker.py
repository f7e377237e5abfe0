"""Benchmark the Docker runner against `docker run --rm` (figures printed, never asserted).

N trivial container jobs (``true`` in the local test image, pullPolicy never)
at concurrency C, driven through ``DockerRunner`` directly (start, wait), beside
a shell loop of ``docker run --rm IMAGE true`` at the same concurrency, in the
same run. Prints start latency (the ``start`` call: what a claimed run waits
for before it is Running), end-to-end seconds per job, and runs/s of both.

    .venv/bin/python bench/bench_docker.py [--runs 50] [--concurrency 4] [--image orchestra-test/busybox:latest]

Needs an engine and the test image: tests/ci/docker-setup.sh makes both.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestra.runners.docker import DockerRunner


def runner_round(runs: int, concurrency: int, image: str) -> tuple[float, list[float], list[float]]:
    """Wall seconds, start latencies and job durations of ``runs`` jobs through the runner."""
    label = {"orchestra.bench": uuid.uuid4().hex}
    job = {"image": image, "pullPolicy": "never", "command": ["true"]}
    with tempfile.TemporaryDirectory() as tmp:
        runner = DockerRunner(Path(tmp), labels=label)

        def one(i: int) -> tuple[float, float]:
            began = time.perf_counter()
            handle = runner.start(f"bench-{i}", job, Path(tmp) / f"{i}.log")
            started = time.perf_counter()
            code = handle.wait(120)
            assert code == 0, f"job {i} ended with {code}"
            return started - began, time.perf_counter() - began

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, range(runs)))
        wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], [r[1] for r in results]


def docker_run_round(runs: int, concurrency: int, image: str) -> float:
    """Wall seconds of ``docker run --rm IMAGE true`` ``runs`` times, ``concurrency`` at once."""
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"seq {runs} | xargs -P {concurrency} -I{{}} docker run --rm {image} true"],
                   check=True)
    return time.perf_counter() - t0


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--image", default="orchestra-test/busybox:latest")
    args = parser.parse_args()
    runner_round(4, 2, args.image)  # warm the engine and the client
    wall, starts, totals = runner_round(args.runs, args.concurrency, args.image)
    baseline = docker_run_round(args.runs, args.concurrency, args.image)
    print(f"{args.runs} trivial container jobs at concurrency {args.concurrency} ({args.image})")
    print(f"  DockerRunner:  {wall:6.2f} s  {args.runs / wall:6.1f} runs/s   start (claim -> running) {ms(starts)};"
          f" start to end {ms(totals)}")
    print(f"  docker run --rm loop: {baseline:6.2f} s  {args.runs / baseline:6.1f} runs/s")
    print(f"  ratio (runner / docker run throughput): {baseline / wall:.2f}")


if __name__ == "__main__":
    main()
