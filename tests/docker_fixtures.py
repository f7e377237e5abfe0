"""Fixtures for tests against a real Docker engine (tests/test_runner_docker.py).

``docker_engine`` is the engine client when one answers and has the test
image (``orchestra-test/busybox:latest``, built by ``tests/ci/docker-setup.sh``
from busybox-static, since CI reaches no registry). Without them the tests
skip with the reason, or fail when ``ORCHESTRA_REQUIRE_DOCKER=1``, so CI
cannot silently stop covering Docker.

Every test gets labels of its own (``docker_labels``): each runner it makes
puts them on its containers, and a finalizer removes every container that
carries them, whatever the test did. ``make_runner`` builds runners and
detaches them at teardown (before the containers go).

Test modules import the fixtures as ``*_fixture`` and ask for them by name,
as with ``store_fixtures``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import waiting

REQUIRE_ENV = "ORCHESTRA_REQUIRE_DOCKER"
TEST_IMAGE = "orchestra-test/busybox:latest"
TEST_LABEL = "orchestra.test-id"
SETUP_HINT = "run tests/ci/docker-setup.sh as root to install and start one"


# A docker pool of the test image for daemons: `command` comes from the deployment.
DOCKER_POOL = f"""\
apiVersion: orchestra/v1
kind: WorkPool
metadata: {{name: boxes}}
spec:
  type: docker
  baseJobTemplate:
    variables:
      type: object
      properties:
        image: {{type: string, default: "{TEST_IMAGE}"}}
        env: {{type: object, additionalProperties: {{type: string}}, default: {{}}}}
    jobConfiguration:
      image: "{{{{ image }}}}"
      command: "{{{{ command }}}}"
      env: "{{{{ env }}}}"
      pullPolicy: never
      terminationGracePeriod: 2s
"""


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(name="docker_engine", scope="session")
def docker_engine_fixture() -> Iterator[Any]:
    """A client of the engine ``docker.from_env()`` finds, with the test image present."""
    try:
        import docker
    except ImportError:
        _unavailable("the Docker SDK is not installed (pip install -e '.[docker]')")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as err:
        _unavailable(f"no Docker engine answers ({err}); {SETUP_HINT}")
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"the test image {TEST_IMAGE} is missing; {SETUP_HINT}")
    yield client
    client.close()


@pytest.fixture(name="docker_labels")
def docker_labels_fixture(docker_engine: Any) -> Iterator[dict[str, str]]:
    """Labels unique to this test; every container carrying them is removed afterwards."""
    labels = {TEST_LABEL: uuid.uuid4().hex}
    yield labels
    for container in labelled_containers(docker_engine, labels):
        with contextlib.suppress(Exception):  # removed meanwhile by the runner under test
            container.remove(force=True)


def labelled_containers(client: Any, labels: dict[str, str]) -> list[Any]:
    """Every container (running or not) that carries ``labels``."""
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    return list(client.containers.list(all=True, filters=filters, sparse=True))


@pytest.fixture(name="make_runner")
def make_runner_fixture(tmp_path: Path, docker_labels: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """Build ``DockerRunner(tmp_path, labels=docker_labels)``s; each is closed at teardown."""
    from orchestra.runners.docker import DockerRunner

    made: list[DockerRunner] = []

    def make(**kwargs: Any) -> DockerRunner:
        kwargs.setdefault("labels", docker_labels)
        runner = DockerRunner(tmp_path, **kwargs)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Containers start slower than processes: a longer default timeout."""
    return waiting.wait_for(predicate, timeout, what)
