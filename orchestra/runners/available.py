"""The runners this machine can serve, for the daemon's in-process worker and ``orchestra worker`` alike."""

from __future__ import annotations

import logging
from pathlib import Path

from orchestra.runners.base import Runner

log = logging.getLogger("orchestra.runners")


def available_runners(base_dir: Path) -> dict[str, Runner]:
    """A runner per pool type: process always; docker only with the Docker SDK installed
    (``orchestra[docker]``), so a machine without it still serves process pools."""
    from orchestra.runners.process import ProcessRunner
    from orchestra.runners.spawn import raise_open_file_limit

    soft, hard = raise_open_file_limit()  # running jobs hold the daemon's descriptors
    if soft != hard:
        log.debug("open files: soft limit raised from %d to the hard limit, %d", soft, hard)
    runners: dict[str, Runner] = {"process": ProcessRunner(base_dir)}
    try:
        from orchestra.runners.docker import DockerRunner
    except ImportError:
        log.warning("the Docker SDK is not installed (pip install 'orchestra[docker]'): docker pools are not served")
    else:
        runners["docker"] = DockerRunner(base_dir)
    return runners
