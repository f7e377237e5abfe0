"""``ApiClient``: JSON over HTTP to ``/api/v1``, errors mapped back to orchestra's exceptions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from orchestra.errors import Conflict, FieldError, InvalidInput, NotFound, OrchestraError, StoreError

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 30.0  # seconds; streams pass their own


class ApiUnavailable(StoreError):
    """The daemon cannot be reached or answered 5xx; retrying later may help."""


class Unauthorized(OrchestraError):
    """The daemon refused the token (401): none given, or a wrong one."""


class ApiClient:
    """A connection-pooling client of one daemon. Thread-safe (httpx.Client is)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + API_PREFIX, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None, timeout: float | None = None,
                content: bytes | None = None) -> Any:
        """Send one request (a JSON body, or raw ``content``); the decoded JSON body (None for
        an empty one), or the mapped error."""
        headers = {"Content-Type": "application/octet-stream"} if content is not None else None
        try:
            response = self._http.request(method, path, json=json, params=_clean(params), content=content,
                                          headers=headers,
                                          timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"cannot reach the orchestra API at {self.base_url}: {exc}") from exc
        raise_for_status(response, self.base_url)
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=json, params=params)

    def stream_bytes(self, path: str, *, params: Mapping[str, Any] | None = None,
                     timeout: float | None = None) -> Iterator[bytes]:
        """The body of a streaming answer, chunk by chunk, as the server sends it."""
        try:
            with self._http.stream("GET", path, params=_clean(params),
                                   timeout=httpx.Timeout(DEFAULT_TIMEOUT, read=timeout)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_status(response, self.base_url)
                yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"lost the stream from the orchestra API at {self.base_url}: {exc}") from exc


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the ones left unset (None or empty)."""
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None and v != [] and v != ()}


def raise_for_status(response: httpx.Response, base_url: str) -> None:
    """Turn an error answer into the exception a local store would have raised."""
    status = response.status_code
    if status < 400:
        return
    detail = _detail(response)
    if status == 401:
        raise Unauthorized(f"the orchestra API at {base_url} refused the token "
                           "(set ORCHESTRA_API_TOKEN to the daemon's token)")
    if status == 404:
        raise NotFound(_text(detail))
    if status == 409:
        raise Conflict(_text(detail))
    if status == 422 and isinstance(detail, list):
        raise InvalidInput([_field_error(item) for item in detail])
    if status >= 500:
        raise ApiUnavailable(f"the orchestra API at {base_url} failed ({status}): {_text(detail)}")
    raise OrchestraError(f"the orchestra API refused the request ({status}): {_text(detail)}")


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text
    return body.get("detail", body) if isinstance(body, dict) else body


def _text(detail: Any) -> str:
    return detail if isinstance(detail, str) else str(detail)


def _field_error(item: Any) -> FieldError:
    """A 422 item ``{"loc": ["body", "parameters", "n"], "msg": ...}`` as a FieldError at ``parameters.n``."""
    if not isinstance(item, dict):
        return FieldError((), str(item))
    loc = [part for part in item.get("loc", []) if isinstance(part, (str, int))]
    if loc[:1] in (["body"], ["query"], ["path"]):
        loc = loc[1:]
    return FieldError(tuple(loc), str(item.get("msg", "invalid")))
