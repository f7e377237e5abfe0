"""The default base job template of each pool type.

A WorkPool without ``baseJobTemplate`` renders its runs from the template
here; ``orchestra pools default-template TYPE`` prints it, and pool authors
start from it when they write their own. Spec validation and the workers
call ``default_template``; the runners (``orchestra.runners``) read the
rendered job whose keys the ``jobConfiguration`` below declares.

The defaults are the safe ones: no privileged container, no host network,
no Docker socket mount, ``additionalProperties: false`` so that a misspelt
job variable fails validation instead of being ignored.
"""

from __future__ import annotations

import copy
from typing import Any

from orchestra.errors import FieldError

POOL_TYPES = ("process", "docker")

# The forms ``orchestra.durations.parse_duration`` accepts (90, 90s, 1h30m,
# 1d 12h, PT15M, P2W), as a pattern: the schema is data that editors and the
# UI validate against too, so it cannot call the parser.
_N = r"[0-9]+(?:[.,][0-9]+)?"
DURATION_PATTERN = (
    rf"^\s*{_N}\s*$"
    rf"|^\s*(?=[0-9])(?:{_N}\s*[wW]\s*)?(?:{_N}\s*[dD]\s*)?(?:{_N}\s*[hH]\s*)?(?:{_N}\s*[mM]\s*)?(?:{_N}\s*[sS]\s*)?$"
    rf"|^[pP](?=[0-9tT])(?:{_N}[wW])?(?:{_N}[dD])?(?:[tT](?=[0-9])(?:{_N}[hH])?(?:{_N}[mM])?(?:{_N}[sS])?)?$"
)

_ENV = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "default": {},
    "description": "Environment variables of the job, name -> value. Names starting with "
    "ORCHESTRA_ are reserved: orchestra sets ORCHESTRA_RUN_ID, ORCHESTRA_DEPLOYMENT, "
    "ORCHESTRA_SCHEDULED_TIME, ORCHESTRA_PARAMETERS and ORCHESTRA_PARAM_<NAME> itself.",
}

_GRACE = {
    "type": ["string", "number"],
    "pattern": DURATION_PATTERN,
    "exclusiveMinimum": 0,
    "default": "10s",
    "description": "How long a cancelled or timed-out job may take to exit after SIGTERM "
    "before it is killed: seconds (30) or a duration (90s, 2m, PT30S).",
}

_PROCESS_VARIABLES: dict[str, Any] = {
    "env": _ENV,
    "workingDir": {
        "type": "string",
        "default": ".",
        "description": "Directory the command runs in, relative to the spec directory unless absolute.",
    },
    "terminationGracePeriod": _GRACE,
    "logMaxBytes": {
        "type": "integer",
        "minimum": 1,
        "default": 10485760,
        "description": "Most bytes of stdout and stderr kept per run; output beyond it is dropped, with a notice.",
    },
}


def _nullable(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], "default": None, "description": description, **extra}


def _string_map(description: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "string"}, "default": {}, "description": description}


_DOCKER_VARIABLES: dict[str, Any] = {
    "image": {
        "type": "string",
        "minLength": 1,
        "default": "python:3.12-slim",
        "description": "Container image to run, e.g. registry.example.com/team/etl:1.4.",
    },
    "env": _ENV,
    "volumes": {
        "type": "array",
        "items": {
            "type": "string",
            "pattern": r"^[^:]+:/[^:]*(?::(?:ro|rw|z|Z)(?:,(?:ro|rw|z|Z))*)?$",
            "description": "host-path-or-volume:/container/path, optionally :ro",
        },
        "default": [],
        "description": "Mounts as host-path-or-volume:/container/path[:ro]. None by default; mounting "
        "/var/run/docker.sock gives the job control of the Docker host.",
    },
    "network": _nullable("string", "Docker network to attach the container to; null = Docker's default "
                         "bridge. 'host' shares the host's network stack: avoid unless needed."),
    "labels": _string_map("Extra container labels. orchestra adds its own (run id) to find containers again."),
    "user": _nullable("string", "User (name or uid[:gid]) the container runs as; null = the image's user."),
    "workingDir": _nullable("string", "Working directory inside the container; null = the image's WORKDIR."),
    "memory": _nullable("string", "Memory limit such as 512m or 2g; null = unlimited.",
                        pattern=r"^[0-9]+(?:\.[0-9]+)?\s?[bBkKmMgGtT]?[iI]?[bB]?$"),
    "cpus": _nullable("number", "CPU limit in cores, e.g. 0.5 or 2; null = unlimited.", exclusiveMinimum=0),
    "pullPolicy": {
        "type": "string",
        "enum": ["never", "if-missing", "always"],
        "default": "if-missing",
        "description": "When to pull the image: never, if-missing (not present locally) or always.",
    },
    "autoRemove": {
        "type": "boolean",
        "default": True,
        "description": "Remove the container once the run has finished and its logs are collected.",
    },
    "extraHosts": _string_map("Extra /etc/hosts entries of the container, host name -> IP address."),
    "privileged": {
        "type": "boolean",
        "default": False,
        "description": "Run the container privileged (full access to the host's devices). Leave false "
        "unless the job really needs it.",
    },
    "entrypoint": _nullable("array", "Overrides the image's ENTRYPOINT (argv); null = the image's own.",
                            items={"type": "string"}),
    "terminationGracePeriod": _GRACE,
}

_DOCKER_ORDER = ("image", "command", "env", "volumes", "network", "labels", "user", "workingDir", "memory",
                 "cpus", "pullPolicy", "autoRemove", "extraHosts", "privileged", "entrypoint",
                 "terminationGracePeriod")


def _template(variables: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A template whose jobConfiguration maps each key to the placeholder of the same name."""
    return {
        "variables": {"type": "object", "additionalProperties": False, "properties": variables},
        "jobConfiguration": {key: "{{ " + key + " }}" for key in keys},
    }


_TEMPLATES: dict[str, dict[str, Any]] = {
    "process": _template(_PROCESS_VARIABLES, ("command", *_PROCESS_VARIABLES)),
    "docker": _template(_DOCKER_VARIABLES, _DOCKER_ORDER),
}


def default_template(pool_type: str) -> dict[str, Any]:
    """A fresh copy of the type's template, so that callers may change it freely."""
    if pool_type not in _TEMPLATES:
        raise FieldError(("spec", "type"), f"unknown pool type {pool_type!r}; expected one of {', '.join(POOL_TYPES)}")
    return copy.deepcopy(_TEMPLATES[pool_type])
