"""The API's bearer token, as ``orchestra daemon`` (which requires it) and the
CLI over ``--api-url`` (which sends it) both read it: from ``--api-token-file``
if given, else from ``ORCHESTRA_API_TOKEN``. Surrounding whitespace is not
part of a token; an empty one is a mistake, never "no token"."""

from __future__ import annotations

import os
from pathlib import Path

import click

TOKEN_ENV = "ORCHESTRA_API_TOKEN"


def read_token(token_file: Path | None) -> str | None:
    if token_file is not None:
        token = token_file.read_text().strip()
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--api-token-file")
        return token
    value = os.environ.get(TOKEN_ENV)
    if value is not None and not value.strip():
        raise click.ClickException(f"{TOKEN_ENV} is set but empty; unset it or give a token")
    return value.strip() if value else None
