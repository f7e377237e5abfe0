"""Runners launch rendered jobs and control them: ``process`` here, ``docker`` later.

Workers depend on the protocols in ``base``; the CLI (the composition root)
picks the implementation per pool type.
"""

from orchestra.runners.base import LaunchError, RunHandle, Runner

__all__ = ["LaunchError", "RunHandle", "Runner"]
