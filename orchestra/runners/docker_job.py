"""A rendered docker job, checked and turned into what the engine is asked for.

Pure: no engine, no clock, no I/O beyond resolving relative paths. The
Docker runner (``runners/docker.py``) calls ``validate_docker_job`` before it
touches the engine and ``container_spec`` to get the arguments of
``containers.create``, the pull policy and what it must remember about the
container (labels). Kept apart from the runner so the translation from a job
to a container is tested as a table, without an engine, and so this module
does not import ``docker``.

The job's fields are those of the docker default template
(``orchestra.jobs.defaults``) plus ``logMaxBytes``, which a pool template may
add. Unknown fields are problems (fail closed), ``null`` means "absent".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestra.durations import parse_duration
from orchestra.runners.base import check_env, check_grace, check_log_max, json_type
from orchestra.runners.logs import DEFAULT_LOG_MAX_BYTES

__all__ = [
    "ATTEMPT", "DOCKER_JOB_FIELDS", "LABEL_PREFIX", "MANAGED", "PULL_POLICIES", "RUN_ID", "ContainerSpec",
    "Remembered", "container_spec", "memory_bytes", "validate_docker_job",
]

DOCKER_JOB_FIELDS = ("image", "command", "env", "volumes", "network", "labels", "user", "workingDir", "memory",
                     "cpus", "pullPolicy", "autoRemove", "extraHosts", "privileged", "entrypoint",
                     "terminationGracePeriod", "logMaxBytes")
PULL_POLICIES = ("never", "if-missing", "always")
DEFAULT_PULL_POLICY = "if-missing"
DEFAULT_GRACE = 10.0  # seconds, as `docker stop`

# Labels orchestra puts on every container it starts. The first four find a
# run's containers again (`docker ps --filter label=orchestra.run-id=...`); the
# last three let a fresh daemon treat an adopted container as the job asked
# (keep it or not, stop it with which grace, log how much) without the job.
LABEL_PREFIX = "orchestra."
MANAGED = "orchestra.managed"
RUN_ID = "orchestra.run-id"
DEPLOYMENT = "orchestra.deployment"
POOL = "orchestra.pool"
ATTEMPT = "orchestra.attempt"
AUTO_REMOVE = "orchestra.auto-remove"
GRACE = "orchestra.grace-seconds"
LOG_MAX = "orchestra.log-max-bytes"

_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([bBkKmMgGtT]?)([iI]?)([bB]?)\s*$")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MODES = frozenset({"ro", "rw", "z", "Z"})


@dataclass(frozen=True)
class Remembered:
    """What the runner needs to know about a container it did not start itself."""

    auto_remove: bool
    grace: float
    log_max_bytes: int

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Remembered:
        """Read back from a container's labels; defaults where a label is missing or odd."""
        return cls(labels.get(AUTO_REMOVE, "true") != "false",
                   _positive_float(labels.get(GRACE), DEFAULT_GRACE),
                   int(_positive_float(labels.get(LOG_MAX), DEFAULT_LOG_MAX_BYTES)))

    def labels(self) -> dict[str, str]:
        return {AUTO_REMOVE: "true" if self.auto_remove else "false", GRACE: f"{self.grace:g}",
                LOG_MAX: str(self.log_max_bytes)}


@dataclass(frozen=True)
class ContainerSpec:
    """One run's container: the image, how to get it, and ``containers.create`` keyword arguments."""

    image: str
    pull_policy: str
    remembered: Remembered
    create_kwargs: dict[str, Any] = field(default_factory=dict)


def container_spec(run_id: str, job: Mapping[str, Any], base_dir: Path,
                   orchestra_labels: Mapping[str, str]) -> ContainerSpec:
    """The container a valid ``job`` asks for (call ``validate_docker_job`` first).

    ``orchestra_labels`` (run id, deployment, pool, the runner's own) win over
    the job's labels; validation already refuses job labels under ``orchestra.``.
    """
    grace = job.get("terminationGracePeriod")
    remembered = Remembered(
        auto_remove=job.get("autoRemove") is not False,
        grace=DEFAULT_GRACE if grace is None else parse_duration(grace).total_seconds(),
        log_max_bytes=job.get("logMaxBytes") or DEFAULT_LOG_MAX_BYTES,
    )
    labels = {**(job.get("labels") or {}), **orchestra_labels, MANAGED: "true", RUN_ID: run_id,
              **remembered.labels()}
    kwargs: dict[str, Any] = {
        "image": job["image"],
        "command": job.get("command"),
        # A rendered env carries ORCHESTRA_RUN_ID already; this covers templates without an env.
        # Nothing of the daemon's own environment goes in: a container starts clean.
        "environment": {"ORCHESTRA_RUN_ID": run_id, **(job.get("env") or {})},
        "labels": labels,
        "detach": True,
        "stdin_open": False,
        "tty": False,  # a TTY would merge streams and rewrite newlines; logs stay byte-exact without
        "privileged": job.get("privileged") is True,
    }
    kwargs.update(_optional(job, base_dir))
    return ContainerSpec(job["image"], job.get("pullPolicy") or DEFAULT_PULL_POLICY, remembered, kwargs)


def _optional(job: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """Keyword arguments for the fields a job may leave at null (Docker's own default)."""
    out: dict[str, Any] = {}
    if job.get("entrypoint") is not None:
        out["entrypoint"] = list(job["entrypoint"])
    if job.get("volumes"):
        out["volumes"] = [resolve_volume(v, base_dir) for v in job["volumes"]]
    if job.get("network"):
        out["network"] = job["network"]
    if job.get("user"):
        out["user"] = job["user"]
    if job.get("workingDir"):
        out["working_dir"] = job["workingDir"]
    if job.get("memory") is not None:
        out["mem_limit"] = memory_bytes(job["memory"])
    if job.get("cpus") is not None:
        out["nano_cpus"] = round(float(job["cpus"]) * 1e9)
    if job.get("extraHosts"):
        out["extra_hosts"] = dict(job["extraHosts"])
    return out


def resolve_volume(volume: str, base_dir: Path) -> str:
    """``host:container[:mode]`` with a relative host path made absolute against ``base_dir``.

    A bare name (``cache:/cache``) is a named Docker volume, as on the
    ``docker run -v`` command line; a path is recognised by a ``/`` or a
    leading ``.``. Relative paths mean the spec directory, like a process
    job's ``workingDir``, not wherever the daemon happened to be started.
    """
    source, rest = volume.split(":", 1)
    if _is_named_volume(source) or source.startswith("/"):
        return volume
    return f"{(base_dir / source).resolve()}:{rest}"


def memory_bytes(text: str) -> int:
    """``512m`` -> 536870912. Docker's units are binary: k, m, g, t (optionally ``Mi``, ``MB``)."""
    match = _MEMORY_RE.match(str(text))
    if match is None:
        raise ValueError(f"not a memory size: {text!r} (write it like 512m or 2g)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * _UNITS[unit])


# --- validation --------------------------------------------------------------


def validate_docker_job(job: Any) -> list[str]:
    """Every problem with a rendered docker job, as ``"field: what is wrong"``."""
    if not isinstance(job, dict):
        return [f"job: must be an object, got {json_type(job)}"]
    problems = [
        f"{key}: unknown field (a docker job takes {', '.join(DOCKER_JOB_FIELDS)})"
        for key in job
        if key not in DOCKER_JOB_FIELDS
    ]
    checks = (_check_image(job.get("image")), _check_argv("command", job.get("command")),
              _check_argv("entrypoint", job.get("entrypoint")), check_env(job.get("env")),
              _check_volumes(job.get("volumes")), _check_labels(job.get("labels")),
              _check_extra_hosts(job.get("extraHosts")), _check_memory(job.get("memory")),
              _check_cpus(job.get("cpus")), _check_pull_policy(job.get("pullPolicy")),
              check_grace(job.get("terminationGracePeriod")), check_log_max(job.get("logMaxBytes")))
    for check in checks:
        problems += check
    for name in ("network", "user", "workingDir"):
        problems += _check_optional_string(name, job.get(name))
    for name in ("autoRemove", "privileged"):
        if job.get(name) is not None and not isinstance(job.get(name), bool):
            problems.append(f"{name}: must be true or false, got {json_type(job.get(name))}")
    return problems


def _check_image(image: Any) -> list[str]:
    if not isinstance(image, str) or not image.strip():
        return [f"image: must be a non-empty string such as busybox:1.36, got {json_type(image)}"]
    return [] if image == image.strip() else [f"image: {image!r} has leading or trailing spaces"]


def _check_argv(name: str, argv: Any) -> list[str]:
    """``command`` and ``entrypoint``: null (the image's own) or a list of strings."""
    if argv is None:
        return []
    if isinstance(argv, str):
        return [f"{name}: must be a list of strings (argv), not one string: jobs never run through a shell"]
    if not isinstance(argv, list):
        return [f"{name}: must be a list of strings or null, got {json_type(argv)}"]
    return [f"{name}[{i}]: must be a string, got {json_type(a)}" for i, a in enumerate(argv) if not isinstance(a, str)]


def _check_volumes(volumes: Any) -> list[str]:
    if volumes is None:
        return []
    if not isinstance(volumes, list):
        return [f"volumes: must be a list of host:container[:ro] strings, got {json_type(volumes)}"]
    return [p for i, v in enumerate(volumes) if (p := _volume_problem(i, v))]


def _volume_problem(index: int, volume: Any) -> str | None:
    where = f"volumes[{index}]"
    if not isinstance(volume, str):
        return f"{where}: must be a string host:container[:ro], got {json_type(volume)}"
    parts = volume.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        return f"{where}: {volume!r} is not host-path-or-volume:/container/path[:ro]"
    if parts[0].startswith("~"):
        return f"{where}: {volume!r}: '~' is not expanded; write an absolute path or one relative to the specs"
    if len(parts) == 3 and not set(parts[2].split(",")) <= _MODES:
        return f"{where}: {volume!r}: mode {parts[2]!r} is not ro, rw, z or Z"
    return None


def _check_labels(labels: Any) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f"labels: must be an object of strings, got {json_type(labels)}"]
    problems = []
    for key, value in labels.items():
        if str(key).startswith(LABEL_PREFIX):
            problems.append(f"labels.{key}: the {LABEL_PREFIX}* labels are reserved: orchestra sets them itself")
        elif not isinstance(value, str):
            problems.append(f"labels.{key}: must be a string, got {json_type(value)} (quote the value in YAML)")
    return problems


def _check_extra_hosts(hosts: Any) -> list[str]:
    if hosts is None:
        return []
    if not isinstance(hosts, dict):
        return [f"extraHosts: must be an object of host name -> IP address, got {json_type(hosts)}"]
    return [f"extraHosts.{name}: must be an IP address string, got {json_type(ip)}"
            for name, ip in hosts.items() if not isinstance(ip, str) or not ip]


def _check_memory(memory: Any) -> list[str]:
    if memory is None:
        return []
    if not isinstance(memory, str):
        return [f"memory: must be a string such as 512m or 2g, got {json_type(memory)}"]
    try:
        size = memory_bytes(memory)
    except ValueError as err:
        return [f"memory: {err}"]
    if size < 6 * 1024**2:  # the engine refuses less than 6 MiB, with words that do not name the field
        return [f"memory: {memory!r} is below Docker's minimum of 6m"]
    return []


def _check_cpus(cpus: Any) -> list[str]:
    ok = isinstance(cpus, int | float) and not isinstance(cpus, bool) and math.isfinite(cpus) and cpus > 0
    return [] if cpus is None or ok else [f"cpus: must be a positive number of cores such as 0.5, got {cpus!r}"]


def _check_pull_policy(policy: Any) -> list[str]:
    if policy is None or policy in PULL_POLICIES:
        return []
    return [f"pullPolicy: must be one of {', '.join(PULL_POLICIES)}, got {policy!r}"]


def _check_optional_string(name: str, value: Any) -> list[str]:
    if value is None or (isinstance(value, str) and value):
        return []
    return [f"{name}: must be a non-empty string or null, got {json_type(value)}"]


def _is_named_volume(source: str) -> bool:
    return _VOLUME_NAME_RE.match(source) is not None


def _positive_float(text: str | None, default: float) -> float:
    try:
        value = float(text) if text is not None else default
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


