"""Rendering with secrets: an opaque token in place of each one, turned back only for the runner.

``jobs.template`` conceals every secret of a render (values the schemas
mark, ``secretRef`` references) behind a token before rendering, so one
render gives both the job a run stores and shows (tokens as ``***`` or
``<secret:env:NAME>``) and the job the runner gets (tokens as the real
values, references resolved on the worker by ``resolve_refs``).
``jobs.placeholders`` keeps tokens exact when it turns values into text
(``text_form``) or JSON (``json_form``). Pure, except that
``resolve_refs`` reads what it is given.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestra.errors import FieldError, Path
from orchestra.jobs.secrets import (
    MASK,
    Pattern,
    SecretRef,
    SecretUnavailable,
    as_ref,
    covers,
    has_ref,
    is_ref_shaped,
    resolve_ref,
)


# A token names one secret of one render. Forms: "w" the whole value (a string
# that is exactly the token takes the value with its type), "t" its text (as
# in a longer string), "j" its JSON; the count is how many times the text was
# JSON-string-escaped since (``ORCHESTRA_PARAMETERS`` holds parameters as JSON).
# The key, random per process, makes tokens unguessable: a value that merely
# looks like one is never rewritten, let alone replaced by a secret.
_KEY = secrets.token_hex(8)
_PREFIX = f"@@secret-{_KEY}-"
_TOKEN_RE = re.compile(re.escape(_PREFIX) + r"(\d+)-(\d+)-([wtj])(\d+)@@")  # table, index, form, escapes
_QUOTED_WHOLE_RE = re.compile('"(' + re.escape(_PREFIX) + r'\d+-\d+-)w0@@"')
_TABLES = itertools.count()


def _token(table: int, index: int, form: str = "w", escapes: int = 0) -> str:
    return f"{_PREFIX}{table}-{index}-{form}{escapes}@@"


def text_form(value: str) -> str:
    """What ``to_text`` gives for a string: a whole-value token becomes its text form."""
    match = _TOKEN_RE.fullmatch(value) if value.startswith(_PREFIX) else None
    if match and match.group(3) == "w":
        return _token(int(match.group(1)), int(match.group(2)), "t", 0)
    return value


def json_form(text: str) -> str:
    """``text`` (JSON just encoded) with its tokens adjusted to what surrounds them now.

    A whole-value token that is a whole JSON string (``"@@...@@"``) becomes
    the value's JSON (quotes included); every other token is now inside a
    JSON string, so its text will be escaped once more.
    """
    if _PREFIX not in text:
        return text
    text = _QUOTED_WHOLE_RE.sub(lambda m: m.group(1) + "J0@@", text)
    text = _TOKEN_RE.sub(lambda m: _token(int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)) + 1), text)
    return text.replace("-J0@@", "-j0@@")


@dataclass(frozen=True)
class _Secret:
    label: str  # what shows: *** or <secret:env:NAME>
    value: Any = None  # the value given, for a secret given by value
    ref: SecretRef | None = None
    path: Path = ()  # where it was found, for messages


@dataclass
class SecretTable:
    """The secrets of one render, each behind a token only this table turns back."""

    table: int = field(default_factory=lambda: next(_TABLES))
    entries: list[_Secret] = field(default_factory=list)
    resolved: dict[SecretRef, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.entries)

    @property
    def refs(self) -> dict[SecretRef, Path]:
        """Each reference to resolve at launch, with the first place it was used."""
        found: dict[SecretRef, Path] = {}
        for entry in self.entries:
            if entry.ref is not None:
                found.setdefault(entry.ref, entry.path)
        return found

    def conceal(self, value: Any, patterns: tuple[Pattern, ...], where: Path = ()) -> Any:
        """``value`` with references and what the patterns mark replaced by tokens (leaves of objects)."""
        if not patterns and not has_ref(value):
            return value
        return self._conceal(value, patterns, where, len(where), False)

    def _conceal(self, value: Any, patterns: tuple[Pattern, ...], path: Path, start: int, secret: bool) -> Any:
        if is_ref_shaped(value):
            ref = as_ref(value)
            return self._add(_Secret(ref.label, ref=ref, path=path)) if ref else value
        secret = secret or any(covers(p, path[start:]) and len(p) == len(path) - start for p in patterns)
        if isinstance(value, dict):
            return {k: self._conceal(v, patterns, (*path, k), start, secret) for k, v in value.items()}
        if isinstance(value, list):
            return [self._conceal(v, patterns, (*path, i), start, secret) for i, v in enumerate(value)]
        if secret and value is not None:
            return self._add(_Secret(MASK, value=value, path=path))
        return value

    def _add(self, secret: _Secret) -> str:
        self.entries.append(secret)
        return _token(self.table, len(self.entries) - 1)

    def masked(self, value: Any) -> Any:
        """``value`` with each token replaced by its label: what is stored and shown."""
        return self._swap(value, lambda entry: entry.label) if self.entries else value

    def revealed(self, value: Any) -> Any:
        """``value`` with each token replaced by the secret itself: only for the runner."""
        missing = [ref.label for ref in self.refs if ref not in self.resolved]
        if missing:
            raise LookupError(f"secret references not resolved before launch: {', '.join(missing)}")
        return self._swap(value, self._value) if self.entries else value

    def masked_text(self, text: str) -> str:
        """A message with any token in it shown as its label."""
        return self._swap(text, lambda entry: entry.label) if self.entries else text

    def _value(self, entry: _Secret) -> Any:
        return self.resolved[entry.ref] if entry.ref is not None else entry.value

    def _swap(self, value: Any, pick: Callable[[_Secret], Any]) -> Any:
        if isinstance(value, str):
            return self._swap_text(value, pick) if _PREFIX in value else value
        if isinstance(value, dict):
            return {key: self._swap(item, pick) for key, item in value.items()}
        if isinstance(value, list):
            return [self._swap(item, pick) for item in value]
        return value

    def _swap_text(self, text: str, pick: Callable[[_Secret], Any]) -> Any:
        whole = _TOKEN_RE.fullmatch(text)
        if whole and int(whole.group(1)) == self.table and whole.group(3) == "w":
            return pick(self.entries[int(whole.group(2))])

        def replace(match: re.Match[str]) -> str:
            if int(match.group(1)) != self.table:
                return match.group(0)
            secret = pick(self.entries[int(match.group(2))])
            form, escapes = match.group(3), int(match.group(4))
            out = json.dumps(secret, ensure_ascii=False) if form == "j" else _as_text(secret)
            for _ in range(escapes):
                out = json.dumps(out, ensure_ascii=False)[1:-1]
            return out

        return _TOKEN_RE.sub(replace, text)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def resolve_refs(table: SecretTable, environ: Mapping[str, str], read_file: Callable[[str], str]) -> list[FieldError]:
    """Resolve every reference of ``table`` into it; the problems name each reference and where it was used."""
    problems = []
    for ref, path in table.refs.items():
        try:
            table.resolved[ref] = resolve_ref(ref, environ, read_file)
        except SecretUnavailable as exc:
            problems.append(FieldError(path, str(exc)))
    return problems


