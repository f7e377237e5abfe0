"""Secret values: which ones are secret, references to them, and hiding them at every edge.

A value is secret when the schema of its field marks it with the standard
JSON Schema annotations ``writeOnly: true`` or ``format: password`` (what
pydantic's ``SecretStr`` emits), in a deployment's ``parameterSchema`` or a
pool's ``baseJobTemplate.variables``; or when it is a reference,
``{"secretRef": {"env": "NAME"}}`` or ``{"secretRef": {"file": "/path"}}``,
allowed wherever a parameter or job-variable value goes. A reference is
resolved only when a worker launches the job, on that worker's machine, and
its value is never stored.

One module, used by every edge instead of copies:

- validation (``specs.parameters``, ``jobs.variables``): ``checkable`` puts a
  placeholder where a reference is, and ``safe_error`` keeps secret values
  out of the messages;
- rendering (``jobs.template``): a ``SecretTable`` replaces every secret by
  an opaque token before the job is rendered, so the job stored on the run
  and shown anywhere carries ``***`` (or ``<secret:env:NAME>``), while
  ``RenderedJob.runnable()`` puts the real values back for the runner only;
- launch (``workers.rendering``): ``resolve_refs`` reads the environment
  and files of the worker;
- display (``api.shapes``, ``planning``): ``masked`` and ``is_secret_path``.

Pure, except ``resolve_refs``, which reads what it is given.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import ValidationError

from orchestra.errors import FieldError, OrchestraError, Path

MASK = "***"
SENSITIVE = "(sensitive value)"
REF_KEY = "secretRef"
REF_SOURCES = ("env", "file")
# A string the placeholder check of a referenced field sees: a reference
# always resolves to a string (an environment variable, a file's text).
REF_PLACEHOLDER = "<secret>"
_MAX_SCHEMA_DEPTH = 16


class _Any:
    """Any key of an object or any index of a list, in a secret path pattern."""

    def __repr__(self) -> str:
        return "*"


ANY: Any = _Any()
Pattern = tuple[Any, ...]  # str | int | ANY parts


# --- marking: which paths of a value a schema calls secret ------------------------------------------------------


def marks_secret(schema: Any) -> bool:
    """``writeOnly: true`` or ``format: password``: the JSON Schema ways of saying "do not show"."""
    return isinstance(schema, dict) and (schema.get("writeOnly") is True or schema.get("format") == "password")


def secret_paths(schema: Any) -> tuple[Pattern, ...]:
    """The paths (with ``ANY`` for map values and list items) a schema marks secret.

    Follows ``properties``, ``additionalProperties``, ``patternProperties``,
    ``items``, ``allOf``/``anyOf``/``oneOf`` and local ``$ref``s (pydantic
    puts nested models in ``$defs``). Over-approximates on purpose: hiding
    a value that is not secret is harmless, showing one that is is not.
    """
    found: list[Pattern] = []
    if isinstance(schema, dict):
        _walk_schema(schema, schema, (), 0, found)
    return tuple(dict.fromkeys(found))


def _walk_schema(schema: Any, root: dict[str, Any], prefix: Pattern, depth: int, found: list[Pattern]) -> None:
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return
    if marks_secret(schema):
        found.append(prefix)
        return
    reference = schema.get("$ref")
    if isinstance(reference, str):
        _walk_schema(_local_ref(root, reference), root, prefix, depth + 1, found)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in _list(schema.get(key)):
            _walk_schema(sub, root, prefix, depth + 1, found)
    properties = schema.get("properties")
    for name, sub in (properties.items() if isinstance(properties, dict) else ()):
        _walk_schema(sub, root, (*prefix, name), depth + 1, found)
    patterns = schema.get("patternProperties")
    for sub in [schema.get("additionalProperties"), *(patterns.values() if isinstance(patterns, dict) else ())]:
        _walk_schema(sub, root, (*prefix, ANY), depth + 1, found)
    items = schema.get("items")
    if isinstance(items, list):
        for index, sub in enumerate(items):
            _walk_schema(sub, root, (*prefix, index), depth + 1, found)
    else:
        _walk_schema(items, root, (*prefix, ANY), depth + 1, found)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _local_ref(root: dict[str, Any], reference: str) -> Any:
    """``#/$defs/Name`` within the same schema; other references are not followed."""
    if not reference.startswith("#/"):
        return None
    node: Any = root
    for part in reference[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node


def is_secret_path(path: Path, patterns: tuple[Pattern, ...]) -> bool:
    """Whether ``path`` is at or below one of the secret ``patterns``."""
    return any(_covers(pattern, path) for pattern in patterns)


def _covers(pattern: Pattern, path: Path) -> bool:
    if len(pattern) > len(path):
        return False
    return all(part is ANY or str(part) == str(actual) for part, actual in zip(pattern, path, strict=False))


def values_at(value: Any, patterns: tuple[Pattern, ...]) -> Iterator[tuple[Path, Any]]:
    """Each ``(path, value)`` of ``value`` that a pattern names (patterns that match nothing give nothing)."""
    for pattern in patterns:
        yield from _values_at(value, pattern, ())


def _values_at(value: Any, pattern: Pattern, path: Path) -> Iterator[tuple[Path, Any]]:
    if not pattern:
        yield path, value
        return
    head, rest = pattern[0], pattern[1:]
    if isinstance(value, dict):
        keys = list(value) if head is ANY else [head] if head in value else []
        for key in keys:
            yield from _values_at(value[key], rest, (*path, key))
    elif isinstance(value, list):
        indexes = range(len(value)) if head is ANY else [head] if isinstance(head, int) and head < len(value) else []
        for index in indexes:
            yield from _values_at(value[index], rest, (*path, index))


# --- references -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """Where a secret's value is read at launch: an environment variable or a file of the worker."""

    source: str  # env | file
    name: str

    @property
    def label(self) -> str:
        """How the reference shows in a stored or printed job; names the place, never the value."""
        return f"<secret:{self.source}:{self.name}>"


def is_ref_shaped(value: Any) -> bool:
    """A mapping with a ``secretRef`` key: meant as a reference, well formed or not."""
    return isinstance(value, dict) and REF_KEY in value


def as_ref(value: Any) -> SecretRef | None:
    """The reference ``value`` is, or None when it is not a well-formed one."""
    if not is_ref_shaped(value) or ref_problem(value):
        return None
    ((source, name),) = value[REF_KEY].items()
    return SecretRef(source, name)


def ref_problem(value: dict[str, Any]) -> str | None:
    """What is wrong with a ``{"secretRef": ...}`` mapping, in plain words, or None."""
    body = value[REF_KEY]
    if len(value) != 1:
        return f"a secretRef stands alone; remove {', '.join(repr(k) for k in value if k != REF_KEY)}"
    if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in REF_SOURCES:
        return 'secretRef takes exactly one of {"env": "NAME"} or {"file": "/absolute/path"}'
    ((source, name),) = body.items()
    if not isinstance(name, str) or not name:
        return f"secretRef.{source} must be a non-empty string"
    if source == "env" and ("=" in name or "\0" in name):
        return f"secretRef.env {name!r} is not a valid environment variable name"
    if source == "file" and not name.startswith("/"):
        return f"secretRef.file {name!r} must be an absolute path (it is read on the worker's machine)"
    return None


def find_refs(value: Any, path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every ``{"secretRef": ...}`` mapping in ``value`` with its path (nothing inside one is searched)."""
    if is_ref_shaped(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from find_refs(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_refs(item, (*path, index))


class SecretUnavailable(OrchestraError):
    """A reference cannot be resolved on this machine; the message names the reference, not a value."""


def resolve_ref(ref: SecretRef, environ: Mapping[str, str], read_file: Callable[[str], str]) -> str:
    """The value behind ``ref``: the variable's value, or the file's text without one trailing newline."""
    if ref.source == "env":
        if ref.name not in environ:
            raise SecretUnavailable(f"{ref.label}: the environment variable {ref.name} is not set on this worker")
        return environ[ref.name]
    try:
        text = read_file(ref.name)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretUnavailable(f"{ref.label}: cannot read the file on this worker ({reason})") from None
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


# --- validation: placeholders for references, no secret in a message ------------------------------------------


@dataclass(frozen=True)
class Checkable:
    """A value ready for schema validation, and what its messages must not show."""

    value: Any  # references replaced by REF_PLACEHOLDER
    refs: dict[Path, SecretRef]
    problems: list[FieldError]  # malformed references, at their paths
    patterns: tuple[Pattern, ...]
    hidden: tuple[str, ...]  # texts of secret values, to scrub from messages

    @property
    def broken(self) -> set[Path]:
        """Where the malformed references are."""
        return {problem.path[:-1] for problem in self.problems}

    def concerns(self, path: Path) -> bool:
        """Whether ``path`` is at or inside a reference or a secret field (its messages need care)."""
        return (any(path[:len(p)] == p for p in [*self.refs, *self.broken])
                or is_secret_path(path, self.patterns))


def checkable(value: Any, patterns: tuple[Pattern, ...] = ()) -> Checkable:
    """``value`` with each reference replaced by a string placeholder (a reference gives a string)."""
    if not patterns and not _has_ref(value):
        return Checkable(value, {}, [], (), ())  # the common case, kept cheap: plan checks every deployment
    refs: dict[Path, SecretRef] = {}
    problems: list[FieldError] = []
    for path, mapping in find_refs(value):
        problem = ref_problem(mapping)
        if problem:
            problems.append(FieldError((*path, REF_KEY), problem))
        else:
            refs[path] = as_ref(mapping)  # type: ignore[assignment]
    hidden = tuple(text for _, secret in values_at(value, patterns) for text in _texts(secret))
    replaced = _replace_at(value, set(refs) | {problem.path[:-1] for problem in problems}, REF_PLACEHOLDER)
    return Checkable(replaced, refs, problems, patterns, hidden)


def _texts(value: Any) -> Iterator[str]:
    """The texts a secret value may appear as in a message: each string and number in it."""
    if is_ref_shaped(value):
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value):
        yield str(value)


def _replace_at(value: Any, paths: set[Path], replacement: Any, path: Path = ()) -> Any:
    if not paths:
        return value
    if path in paths:
        return replacement
    if isinstance(value, dict):
        return {key: _replace_at(item, paths, replacement, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_at(item, paths, replacement, (*path, index)) for index, item in enumerate(value)]
    return value


def safe_error(error: ValidationError, view: Checkable) -> str | None:
    """The message of a schema error that shows no secret, or None to drop it.

    At a reference only the type can be judged (a reference gives a
    string); other constraints wait for the value at launch. At a secret
    field the message says what is wrong without quoting the value; any
    other message has the secret values it quotes (a parent object's repr
    does) replaced by ``***``.
    """
    path = tuple(error.absolute_path)
    if any(path[:len(p)] == p for p in view.broken):
        return None  # the reference's own problem is reported already
    at, ref = next(((p, r) for p, r in view.refs.items() if path[:len(p)] == p), ((), None))
    if ref is not None:
        if error.validator != "type" or path != at:
            return None
        return f"{ref.label} gives a string, but this field must be of type {_types(error.validator_value)}"
    if is_secret_path(path, view.patterns):
        return f"the secret value (not shown) {_constraint(error)}"
    return scrub(error.message, view.hidden)


def _types(expected: Any) -> str:
    return " or ".join(repr(t) for t in expected) if isinstance(expected, list) else repr(expected)


def _constraint(error: ValidationError) -> str:
    if error.validator == "type":
        return f"is not of type {_types(error.validator_value)}"
    if error.validator in ("enum", "const"):
        return "is not one of the allowed values"
    if error.validator == "pattern":
        return f"does not match the pattern {error.validator_value!r}"
    if error.validator in ("minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
                           "exclusiveMaximum", "minItems", "maxItems", "format"):
        return f"does not satisfy {error.validator}: {error.validator_value!r}"
    return f"does not satisfy the schema's {error.validator!r}"


def scrub(message: str, hidden: tuple[str, ...]) -> str:
    """``message`` with every quoted or plain occurrence of the hidden texts replaced by ``***``.

    A plain (unquoted) text shorter than 4 characters is left alone: hiding
    every "1" or "eu" would garble the message and hide next to nothing.
    """
    for text in sorted(hidden, key=len, reverse=True):
        forms = (repr(text), json.dumps(text, ensure_ascii=False)) + ((text,) if len(text) >= 4 else ())
        for form in forms:
            message = message.replace(form, MASK)
    return message


# --- display: a value as it may leave the server ------------------------------------------------------------------


def masked(value: Any, patterns: tuple[Pattern, ...], *, refs_as_labels: bool = False, mask: str = MASK) -> Any:
    """``value`` with what the patterns mark replaced by ``***``; nothing else is copied.

    References are not secrets (they name a place, not a value): they stay
    as given, or become their label (``<secret:env:NAME>``) where a rendered
    value is shown.
    """
    if refs_as_labels and is_ref_shaped(value):
        ref = as_ref(value)
        return ref.label if ref else MASK
    if not patterns and not refs_as_labels:
        return value
    if () in patterns:
        return _mask_leaves(value, refs_as_labels, mask)
    return _masked(value, patterns, (), refs_as_labels, mask)


def _masked(value: Any, patterns: tuple[Pattern, ...], path: Path, labels: bool, mask: str) -> Any:
    if is_ref_shaped(value):
        ref = as_ref(value)
        return (ref.label if ref else mask) if labels else value
    if any(len(p) == len(path) and _covers(p, path) for p in patterns):
        return _mask_leaves(value, labels, mask)
    if isinstance(value, dict):
        return {key: _masked(item, patterns, (*path, key), labels, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, patterns, (*path, index), labels, mask) for index, item in enumerate(value)]
    return value


def _mask_leaves(value: Any, labels: bool, mask: str) -> Any:
    """A secret value's shape kept (so a masked object still shows its keys), its leaves hidden."""
    if is_ref_shaped(value):
        ref = as_ref(value)
        return (ref.label if ref else mask) if labels else value
    if isinstance(value, dict):
        return {key: _mask_leaves(item, labels, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_leaves(item, labels, mask) for item in value]
    return None if value is None else mask


def under(patterns: tuple[Pattern, ...], prefix: Path) -> tuple[Pattern, ...]:
    """The patterns as seen from the value at ``prefix`` (those that reach below it)."""
    return tuple(p[len(prefix):] for p in patterns if len(p) >= len(prefix) and _covers(p[:len(prefix)], prefix))


# --- what of a resource spec is secret ------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretMarks:
    """The secret paths of a run's parameters and job variables (from its deployment and pool)."""

    parameters: tuple[Pattern, ...] = ()
    variables: tuple[Pattern, ...] = ()

    def run_values(self, parameters: Any, job_variables: Any) -> tuple[Any, Any]:
        """A run's given parameters and job variables as they may be shown."""
        return masked(parameters, self.parameters), masked(job_variables, self.variables)


HIDE_ALL = SecretMarks(((),), ((),))  # for a run whose deployment is gone: nothing tells what is secret


def spec_secret_paths(kind: str, spec: Any) -> tuple[Pattern, ...]:
    """Where a resource's spec holds secret values: parameters and defaults its own schemas mark.

    A deployment's ``jobVariables`` are marked by its pool's schema, which
    the spec alone does not tell: pass that schema as ``variables_schema``
    to ``deployment_secret_paths`` when the pool is at hand.
    """
    if not isinstance(spec, dict):
        return ()
    if kind == "Deployment":
        return deployment_secret_paths(spec, None)
    if kind == "WorkPool":
        template = spec.get("baseJobTemplate")
        variables = template.get("variables") if isinstance(template, dict) else None
        return tuple((*("baseJobTemplate", "variables"), *p) for p in _schema_value_paths(variables))
    return ()


def deployment_secret_paths(spec: dict[str, Any], variables_schema: Any) -> tuple[Pattern, ...]:
    """The secret paths of a deployment spec, its ``jobVariables`` too when the pool's schema is given."""
    parameter_schema = spec.get("parameterSchema")
    marked = secret_paths(parameter_schema)
    paths = [("parameters", *p) for p in marked] + [("schedules", ANY, "parameters", *p) for p in marked]
    paths += [("parameterSchema", *p) for p in _schema_value_paths(parameter_schema)]
    paths += [("jobVariables", *p) for p in secret_paths(variables_schema)]
    return tuple(paths)


def _schema_value_paths(schema: Any) -> list[Pattern]:
    """Where a schema itself holds secret values: the ``default`` (and ``examples``) of what it marks."""
    found: list[Pattern] = []
    _walk_defaults(schema, (), 0, found)
    for name, sub in ((schema.get("properties") or {}).items() if isinstance(schema, dict) else ()):
        for path in secret_paths(sub) if isinstance(sub, dict) and not marks_secret(sub) else ():
            found.append(("properties", name, "default", *path))
    return found


def _walk_defaults(schema: Any, location: Pattern, depth: int, found: list[Pattern]) -> None:
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return
    if marks_secret(schema):
        found.extend([(*location, "default"), (*location, "examples"), (*location, "enum"), (*location, "const")])
        return
    for key, sub in schema.items():
        if isinstance(sub, dict) and key in ("properties", "patternProperties", "$defs", "definitions"):
            for name, item in sub.items():
                _walk_defaults(item, (*location, key, name), depth + 1, found)
        elif isinstance(sub, dict) and key in ("additionalProperties", "items", "not"):
            _walk_defaults(sub, (*location, key), depth + 1, found)
        elif isinstance(sub, list) and key in ("allOf", "anyOf", "oneOf", "items"):
            for index, item in enumerate(sub):
                _walk_defaults(item, (*location, key, index), depth + 1, found)


# --- rendering: tokens in place of secrets --------------------------------------------------------------------

# A token names one secret of one render. Forms: "w" the whole value (a string
# that is exactly the token takes the value with its type), "t" its text (as
# in a longer string), "j" its JSON; the count is how many times the text was
# JSON-string-escaped since (``ORCHESTRA_PARAMETERS`` holds parameters as JSON).
_TOKEN_RE = re.compile(r"@@secret-([0-9a-f]{12})-(\d+)-([wtj])(\d+)@@")
_QUOTED_WHOLE_RE = re.compile(r'"(@@secret-[0-9a-f]{12}-\d+-)w0@@"')


def _token(nonce: str, index: int, form: str = "w", escapes: int = 0) -> str:
    return f"@@secret-{nonce}-{index}-{form}{escapes}@@"


def text_form(value: str) -> str:
    """What ``to_text`` gives for a string: a whole-value token becomes its text form."""
    match = _TOKEN_RE.fullmatch(value)
    if match and match.group(3) == "w":
        return _token(match.group(1), int(match.group(2)), "t", 0)
    return value


def json_form(text: str) -> str:
    """``text`` (JSON just encoded) with its tokens adjusted to what surrounds them now.

    A whole-value token that is a whole JSON string (``"@@...@@"``) becomes
    the value's JSON (quotes included); every other token is now inside a
    JSON string, so its text will be escaped once more.
    """
    if "@@secret-" not in text:
        return text
    text = _QUOTED_WHOLE_RE.sub(lambda m: m.group(1) + "J0@@", text)
    text = _TOKEN_RE.sub(lambda m: _token(m.group(1), int(m.group(2)), m.group(3), int(m.group(4)) + 1), text)
    return text.replace("-J0@@", "-j0@@")


@dataclass(frozen=True)
class _Secret:
    label: str  # what shows: *** or <secret:env:NAME>
    value: Any = None  # the value given, for a secret given by value
    ref: SecretRef | None = None
    path: Path = ()  # where it was found, for messages


@dataclass
class SecretTable:
    """The secrets of one render, each behind a token only this table can turn back.

    The nonce makes tokens unguessable, so a value that merely looks like a
    token is never replaced by a secret.
    """

    nonce: str = ""  # drawn with the first secret: most renders have none, and urandom is a syscall
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
        if not patterns and not _has_ref(value):
            return value
        return self._conceal(value, patterns, where, len(where), False)

    def _conceal(self, value: Any, patterns: tuple[Pattern, ...], path: Path, start: int, secret: bool) -> Any:
        if is_ref_shaped(value):
            ref = as_ref(value)
            return self._add(_Secret(ref.label, ref=ref, path=path)) if ref else value
        secret = secret or any(_covers(p, path[start:]) and len(p) == len(path) - start for p in patterns)
        if isinstance(value, dict):
            return {k: self._conceal(v, patterns, (*path, k), start, secret) for k, v in value.items()}
        if isinstance(value, list):
            return [self._conceal(v, patterns, (*path, i), start, secret) for i, v in enumerate(value)]
        if secret and value is not None:
            return self._add(_Secret(MASK, value=value, path=path))
        return value

    def _add(self, secret: _Secret) -> str:
        self.nonce = self.nonce or secrets.token_hex(6)
        self.entries.append(secret)
        return _token(self.nonce, len(self.entries) - 1)

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
            return self._swap_text(value, pick) if "@@secret-" in value else value
        if isinstance(value, dict):
            return {key: self._swap(item, pick) for key, item in value.items()}
        if isinstance(value, list):
            return [self._swap(item, pick) for item in value]
        return value

    def _swap_text(self, text: str, pick: Callable[[_Secret], Any]) -> Any:
        whole = _TOKEN_RE.fullmatch(text)
        if whole and whole.group(1) == self.nonce and whole.group(3) == "w":
            return pick(self.entries[int(whole.group(2))])

        def replace(match: re.Match[str]) -> str:
            if match.group(1) != self.nonce:
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


def _has_ref(value: Any) -> bool:
    if isinstance(value, dict):
        return REF_KEY in value or any(_has_ref(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_ref(item) for item in value)
    return False


def resolve_refs(table: SecretTable, environ: Mapping[str, str], read_file: Callable[[str], str]) -> list[FieldError]:
    """Resolve every reference of ``table`` into it; the problems name each reference and where it was used."""
    problems = []
    for ref, path in table.refs.items():
        try:
            table.resolved[ref] = resolve_ref(ref, environ, read_file)
        except SecretUnavailable as exc:
            problems.append(FieldError(path, str(exc)))
    return problems


