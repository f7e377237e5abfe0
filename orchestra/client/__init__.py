"""Talking to an orchestra daemon over its HTTP API.

``ApiClient`` is the one place that knows about URLs, the bearer token and
status codes: it turns error answers back into orchestra's own exceptions
(404 -> ``NotFound``, 409 -> ``Conflict``, 422 -> ``InvalidInput``), so the
code above it (the CLI's remote backend, remote workers) handles a remote
daemon exactly as it handles a local store.
"""

from orchestra.client.http import ApiClient, ApiUnavailable, Unauthorized

__all__ = ["ApiClient", "ApiUnavailable", "Unauthorized"]
