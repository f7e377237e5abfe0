"""The Docker runner: a rendered docker job becomes a labelled container on a Docker engine.

The composition root (``cli/daemon_cmd.py``) builds one ``DockerRunner`` for
the ``docker`` pool type; workers call ``start`` per run and keep the
returned ``DockerHandle``; recovery after a daemon restart calls ``adopt``
(follow a container the dead daemon started to its end) or ``reap_orphan``
(stop one that should not live on), and ``cleanup_terminal`` removes
containers whose runs are over. This module and its ``docker_*`` siblings are
the only ones that import the Docker SDK (``docker``).

The engine is the one ``docker.from_env()`` finds: ``DOCKER_HOST``,
``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``, the current Docker context, else
the local socket. It is contacted lazily, on the first start, so a daemon
whose engine is down still starts and serves its other pools; every engine
failure becomes a ``LaunchError`` in plain words, which fails the attempt (and
retries it per the deployment's ``retries``), never the daemon. A start that
could not connect to the engine at all (no socket, connection refused) is an
``Unreachable``: the engine never saw it, so nothing was made, and the run
waits in the queue for the engine instead of failing.

Every container carries labels (``docker_job``): ``orchestra.managed=true``,
``orchestra.run-id``, ``orchestra.deployment``, ``orchestra.pool``, and what a
later daemon needs to treat it as its job asked (keep it, grace, log bound).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from urllib3.exceptions import ConnectTimeoutError

from orchestra.runners.base import LaunchError, Unreachable, Unrecorded
from orchestra.runners.docker_follow import ENGINE_ERRORS, Follower, explain
from orchestra.runners.docker_job import (
    ATTEMPT,
    DEPLOYMENT,
    MANAGED,
    POOL,
    RUN_ID,
    ContainerSpec,
    Remembered,
    container_spec,
    validate_docker_job,
)
from orchestra.runners.docker_logs import LogCursor, Position
from orchestra.runners.logs import BoundedLogWriter

__all__ = ["DockerHandle", "DockerRunner", "default_client", "parse_ident"]

log = logging.getLogger(__name__)

IDENT_PREFIX = "docker:"
END_MARGIN = 10.0  # seconds after `docker stop` returns for the output to drain and the container to go
LIVE_STATES = frozenset({"running", "paused", "restarting"})
_POOL_SIZE = 256  # engine connections kept: one per followed container, plus calls


def default_client() -> Any:
    """``docker.from_env()`` with a connection pool sized for many followed containers."""
    return docker.from_env(max_pool_size=_POOL_SIZE)


def parse_ident(ident: str) -> str:
    """``docker:<container id>`` -> the id; ``ValueError`` for an ident another runner made."""
    if not ident.startswith(IDENT_PREFIX) or len(ident) == len(IDENT_PREFIX):
        raise ValueError(f"not a docker runner ident: {ident!r}")
    return ident[len(IDENT_PREFIX):]


class DockerHandle:
    """A container this runner follows (started or adopted). Thread-safe like every ``RunHandle``."""

    def __init__(self, follower: Follower) -> None:
        self._follower = follower
        self._container = follower.container

    @property
    def ident(self) -> str:
        return IDENT_PREFIX + str(self._container.id)

    @property
    def container_id(self) -> str:
        return str(self._container.id)

    def poll(self) -> int | None:
        return self._follower.exit_code if self._follower.ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        self._follower.ended.wait(timeout)
        return self.poll()

    def terminate(self, grace: float | None = None) -> int | None:
        """``docker stop`` (SIGTERM, ``grace``, SIGKILL), then wait for the output and the removal."""
        seconds = self._follower.remembered.grace if grace is None else grace
        if not self._follower.ended.is_set():
            # The engine counts whole seconds; rounding up never cuts a grace short.
            with contextlib.suppress(NotFound):
                self._container.stop(timeout=max(0, math.ceil(seconds)))
        return self.wait(END_MARGIN)

    def kill(self) -> None:
        """SIGKILL now; never raises (callers use it when something else already failed)."""
        if self._follower.ended.is_set():
            return
        try:
            self._container.kill()
        except NotFound:
            pass
        except ENGINE_ERRORS as err:  # 409: it is not running any more, or the engine is gone
            log.warning("cannot kill container %s: %s", self._follower.short_id, explain(err))

    def detach(self) -> None:
        """Stop following; the container runs on, for a later ``adopt``."""
        self._follower.detach()


class DockerRunner:
    """Launches docker jobs as containers; see the module docstring."""

    def __init__(self, base_dir: Path, *, client_factory: Callable[[], Any] = default_client,
                 labels: Mapping[str, str] | None = None) -> None:
        """``base_dir`` resolves relative volume paths (the spec directory); ``labels`` go on every
        container and scope ``cleanup_terminal`` (e.g. one orchestra installation of several on an engine)."""
        self._base_dir = Path(base_dir)
        self._client_factory = client_factory
        self._labels = dict(labels or {})
        self._client: Any = None
        self._lock = threading.Lock()
        self._followed: dict[str, Follower] = {}

    def validate_job(self, job: dict[str, Any]) -> list[str]:
        return validate_docker_job(job)

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, *, deployment: str | None = None,
              pool: str | None = None, attempt: int | None = None) -> DockerHandle:
        """Pull per ``pullPolicy``, create and start the container, follow it; raises ``LaunchError``.

        ``deployment``, ``pool`` and ``attempt`` only label the container (the
        deployment defaults to the job's ``ORCHESTRA_DEPLOYMENT``); the attempt
        lets a later daemon adopt a container whose start was never recorded
        (``find_unrecorded``). A log file that cannot be created is an
        ``OSError``, raised before any container exists.
        """
        problems = validate_docker_job(job)
        if problems:
            raise LaunchError("invalid docker job: " + "; ".join(problems))
        spec = container_spec(run_id, job, self._base_dir, self._run_labels(job, deployment, pool, attempt))
        client = self._engine()
        writer = BoundedLogWriter(Path(log_path), spec.remembered.log_max_bytes)
        try:
            container = _create_and_start(client, spec, probe=self.probe)
        except BaseException:
            writer.close()
            raise
        try:
            cursor = LogCursor(Path(log_path), container.id, Position())
        except OSError:
            writer.close()
            _kill_and_remove(container, {}, "running")
            raise
        return self._follow(container, writer, cursor, spec.remembered)

    def adopt(self, ident: str, log_path: Path, run_id: str | None = None) -> DockerHandle | None:
        """Follow again a container a dead daemon started; None if it is gone (or not ours).

        Output continues where the log file stands (``docker_logs``); an
        already ended container yields a handle that reports its exit code
        once the missing output is appended. ``ValueError`` for a foreign
        ident, ``LaunchError`` when the engine cannot be asked (try later:
        the container may well be running).
        """
        container_id = parse_ident(ident)
        with self._lock:
            followed = self._followed.get(container_id)
        if followed is not None:  # this very runner follows it already
            return DockerHandle(followed)
        container = self._ours(container_id, run_id)
        if container is None:
            return None
        remembered = Remembered.from_labels(container.labels)
        position = LogCursor.read(Path(log_path), container.id)
        room = remembered.log_max_bytes - position.offered
        writer = BoundedLogWriter(Path(log_path), max(room, 1))
        writer.truncated = room <= 0  # the bound was reached before the restart: keep dropping
        state = "running" if container.status in LIVE_STATES else f"already {container.status}"
        writer.note(f"following container {container.id[:12]} ({state}) again after a daemon restart")
        cursor = LogCursor(Path(log_path), container.id, position)
        return self._follow(container, writer, cursor, remembered)

    def find_unrecorded(self, run_id: str, attempt: int) -> Unrecorded | None:
        """The container of this attempt of the run, if a dead daemon started it and died
        before recording it; None if there is none (or only one never started, removed here).

        Only a container labelled with this very attempt counts: an earlier
        attempt's container is not this attempt's job (``reap_unrecorded``
        ends it). ``LaunchError`` when the engine cannot be asked.
        """
        found = None
        for container in self._containers_of(run_id, {ATTEMPT: str(attempt)}):
            if _status_of(container) == "created":  # made, never started: nothing ran, nothing to follow
                _kill_and_remove(container, {}, "created")
            elif found is None or _status_of(container) in LIVE_STATES:
                found = container
        if found is None:
            return None
        return Unrecorded(IDENT_PREFIX + str(found.id), _started_at(found),
                          Remembered.from_labels(_labels_of(found)).grace)

    def reap_unrecorded(self, run_id: str) -> bool:
        """End the containers of ``run_id`` that no one follows (a dead daemon's start it never
        recorded, of an attempt not adopted); True if one was running. Removed unless kept."""
        running = False
        for container in self._containers_of(run_id, {}):
            if not self._is_followed(container.id):
                running = _kill_and_remove(container, _labels_of(container), _status_of(container)) or running
        return running

    def reap_orphan(self, ident: str) -> bool:
        """SIGKILL the container ``ident`` names if it runs and is ours; remove it unless kept.

        The ident is the full container id, which the engine never reuses, so
        a stale ident cannot harm anything else. True if it was running.
        """
        container = self._ours(parse_ident(ident), None)
        if container is None:
            return False
        return _kill_and_remove(container, _labels_of(container), _status_of(container))

    def cleanup_terminal(self, is_terminal: Callable[[str], bool]) -> list[str]:
        """Remove the containers of runs that are over; the ids of those touched.

        ``is_terminal(run_id)`` decides; return False for a run id your store
        does not know (another installation's container). Running ones are
        killed, stopped ones removed, except those kept on purpose
        (``autoRemove: false``), which are only killed if still running.
        """
        filters = {"label": [f"{MANAGED}=true", *(f"{k}={v}" for k, v in self._labels.items())]}
        client = self._engine()
        with _engine_errors("cannot list containers"):
            containers = client.containers.list(all=True, filters=filters, sparse=True)
        touched = []
        for container in containers:
            labels, status = _labels_of(container), _status_of(container)
            run_id = labels.get(RUN_ID)
            if run_id is None or self._is_followed(container.id) or not is_terminal(run_id):
                continue
            kept = not Remembered.from_labels(labels).auto_remove
            if status in LIVE_STATES or not kept:
                _kill_and_remove(container, labels, status)
                touched.append(str(container.id))
        return touched

    def close(self) -> None:
        """Stop following every container; they run on (a later daemon adopts them)."""
        with self._lock:
            followers = list(self._followed.values())
        for follower in followers:
            follower.detach()

    # -- helpers ------------------------------------------------------------------------

    def _run_labels(self, job: dict[str, Any], deployment: str | None, pool: str | None,
                    attempt: int | None) -> dict[str, str]:
        labels = dict(self._labels)
        deployment = deployment or (job.get("env") or {}).get("ORCHESTRA_DEPLOYMENT")
        if deployment:
            labels[DEPLOYMENT] = deployment
        if pool:
            labels[POOL] = pool
        if attempt is not None:
            labels[ATTEMPT] = str(attempt)
        return labels

    def _engine(self) -> Any:
        """The engine client, made on first use; ``LaunchError`` while the engine is unreachable.

        Made outside the runner's lock: making it asks the engine its API
        version, which on a host that drops packets waits for the client's
        timeout, and the lock also guards the followed containers, which
        every job's end and every cancel touches. Two threads making it at
        once keep the first client made and close the other.
        """
        with self._lock:
            if self._client is not None:
                return self._client
        try:
            made = self._client_factory()
        except ENGINE_ERRORS as err:
            if never_reached(err):
                raise Unreachable(unreachable(err), probe=self.probe) from None
            raise LaunchError(unreachable(err)) from None
        with self._lock:
            if self._client is None:
                self._client, made = made, None
            client = self._client
        if made is not None:
            with contextlib.suppress(Exception):
                made.close()
        return client

    def probe(self) -> None:
        """``Unreachable`` while the engine cannot be reached; returns once it answers.

        A pool's outage (``workers.outages``) asks this instead of claiming a
        run to try the engine with. A ping makes nothing, so any failure to
        get an answer counts here (a reset mid-request included), and any
        answer, an error one too, counts as reached: the run that then tries
        says the rest. It may take the client's timeout on a host that drops
        packets; it runs in a thread of its own.
        """
        try:
            client = self._engine()
            client.ping()
        except APIError:
            return
        except (LaunchError, *ENGINE_ERRORS) as err:
            raise Unreachable(str(err) if isinstance(err, LaunchError) else unreachable(err),
                              probe=self.probe) from None

    def _ours(self, container_id: str, run_id: str | None) -> Any:
        """The container, if it exists and orchestra made it (for ``run_id``, when given)."""
        client = self._engine()
        with _engine_errors(f"cannot inspect container {container_id[:12]}"):
            try:
                container = client.containers.get(container_id)
            except NotFound:
                return None
        labels = container.labels
        if labels.get(MANAGED) != "true" or (run_id is not None and labels.get(RUN_ID) != run_id):
            return None
        return container

    def _containers_of(self, run_id: str, labels: Mapping[str, str]) -> list[Any]:
        """This runner's containers of ``run_id`` (with these labels too), stopped ones included."""
        wanted = {**self._labels, **labels, MANAGED: "true", RUN_ID: run_id}
        client = self._engine()
        with _engine_errors(f"cannot list the containers of run {run_id}"):
            return list(client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in wanted.items()]}))

    def _follow(self, container: Any, writer: BoundedLogWriter, cursor: LogCursor,
                remembered: Remembered) -> DockerHandle:
        follower = Follower(container, writer, cursor, remembered, self._forget)
        with self._lock:
            self._followed[container.id] = follower
        follower.start()
        return DockerHandle(follower)

    def _forget(self, follower: Follower) -> None:
        with self._lock:
            if self._followed.get(follower.container.id) is follower:
                del self._followed[follower.container.id]

    def _is_followed(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._followed


# --- the engine calls -----------------------------------------------------------------


@contextlib.contextmanager
def _engine_errors(doing: str) -> Any:
    """Turn the SDK's exceptions into ``LaunchError`` (the cause kept for callers that look)."""
    try:
        yield
    except APIError as err:
        raise LaunchError(f"{doing}: {explain(err)}") from err
    except ENGINE_ERRORS as err:
        raise LaunchError(unreachable(err)) from err


def unreachable(err: BaseException) -> str:
    """A sentence for "no engine there", naming where orchestra looked and what to check."""
    where = os.environ.get("DOCKER_HOST") or "the local Docker socket (DOCKER_HOST is not set)"
    text = str(err)
    if "Permission denied" in text:
        hint = "permission denied: run orchestra as a user in the docker group, or point DOCKER_HOST elsewhere"
    elif "No such file or directory" in text or "FileNotFoundError" in text:
        hint = "no socket there: is dockerd running?"
    elif "Connection refused" in text:
        hint = "connection refused: is dockerd running and listening there?"
    else:
        hint = text
    return f"cannot reach the Docker engine at {where}: {hint}"


def never_reached(err: BaseException | None) -> bool:
    """Did a call fail before it got to the engine (no socket, nothing listening,
    no connection made in time)? Only then is it certain the engine did nothing.

    The SDK wraps the socket's error: ``requests.ConnectionError`` around
    urllib3's ``ProtocolError`` (a unix socket) or ``MaxRetryError`` and
    ``NewConnectionError`` (TCP), the cause in ``args``, ``reason`` or
    ``__cause__``; a reset or a read timeout mid-request is not such a failure. Not
    ``__context__``: an error raised while another was handled (a retry that connected,
    then timed out) would pass for the earlier one.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ConnectionRefusedError, FileNotFoundError, PermissionError, ConnectTimeoutError)):
            return True
        nested = [a for a in (getattr(err, "reason", None), *err.args) if isinstance(a, BaseException)]
        err = nested[0] if nested else err.__cause__
    return False


def _create_and_start(client: Any, spec: ContainerSpec, probe: Callable[[], None] | None = None) -> Any:
    """The started container; ``LaunchError`` with the engine's words, and no container left behind;
    ``Unreachable`` (with ``probe``) when the engine could not be reached before anything was made."""
    try:
        container = _create(client, spec)
    except LaunchError as err:
        if never_reached(err.__cause__):
            raise Unreachable(str(err), probe=probe) from err.__cause__
        raise
    try:
        with _engine_errors(f"cannot start the container from {spec.image!r}"):
            container.start()
    except LaunchError:
        with contextlib.suppress(*ENGINE_ERRORS):
            container.remove(force=True)
        raise
    return container


def _create(client: Any, spec: ContainerSpec) -> Any:
    """Create the container, getting the image as ``pullPolicy`` says: never, if-missing or always.

    The image is not looked up first: the create call says when it is
    missing, one engine round trip fewer per run.
    """
    if spec.pull_policy == "always":
        _pull(client, spec)
    doing = f"cannot create a container from {spec.image!r}"
    with _engine_errors(doing):
        try:
            return client.containers.create(**spec.create_kwargs)
        except ImageNotFound:
            pass
    if spec.pull_policy == "never":
        raise LaunchError(f"image {spec.image!r} is not present on the Docker engine and pullPolicy is "
                          "'never': build or load it there first, or use pullPolicy if-missing")
    _pull(client, spec)
    with _engine_errors(doing):
        return client.containers.create(**spec.create_kwargs)


def _pull(client: Any, spec: ContainerSpec) -> None:
    repository, tag = docker.utils.parse_repository_tag(spec.image)
    with _engine_errors(f"cannot pull image {spec.image!r} (pullPolicy {spec.pull_policy})"):
        client.images.pull(repository, tag=tag)


def _kill_and_remove(container: Any, labels: Mapping[str, str], status: str) -> bool:
    """Remove it (which kills it first), or only kill it if kept; True if it was live."""
    live = status in LIVE_STATES
    with _engine_errors(f"cannot stop container {str(container.id)[:12]}"):
        try:
            if Remembered.from_labels(labels).auto_remove:
                container.remove(force=True)
            elif live:
                container.kill()
        except NotFound:
            pass
        except APIError as err:
            if err.status_code != 409:  # 409: it stopped in between, or is being removed already
                raise
    return live


def _labels_of(container: Any) -> dict[str, str]:
    """Labels of a full or a sparse (``list(sparse=True)``) container object."""
    attrs = container.attrs
    return dict((attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {})


def _status_of(container: Any) -> str:
    state = container.attrs.get("State")
    return str(state.get("Status") if isinstance(state, dict) else state)


def _started_at(container: Any) -> datetime | None:
    """When the engine started it (``State.StartedAt``), if it says; its zero time means never."""
    state = container.attrs.get("State")
    raw = state.get("StartedAt") if isinstance(state, dict) else None
    if not raw or str(raw).startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(str(raw))
    except ValueError:
        return None
