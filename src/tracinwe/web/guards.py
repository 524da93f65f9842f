"""`RequestGuard`: the explorer's ASGI gate, checked before any route runs.

* Host check: a request whose ``Host`` header is not a trusted name gets 400. The
  explorer serves the training texts; without this check a page on another origin
  could read them through DNS rebinding (its own name resolving to 127.0.0.1).
* Body limit: a request body over ``max_body`` bytes gets 413 without being read:
  a ``Content-Length`` over the limit is refused at once, and a streamed (chunked)
  body is read only up to the limit. At most ``max_body`` bytes are ever buffered.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["RequestGuard", "LOCAL_HOSTS", "MAX_BODY_BYTES", "host_name"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 64 * 1024


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without the port and IPv6 brackets, lower case."""
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Refuse untrusted ``Host`` headers (400) and bodies over ``max_body`` bytes (413)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str] = (), max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.hosts = {host_name(h) for h in (*LOCAL_HOSTS, *hosts)} - {""}
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        name = host_name(headers.get("host", ""))
        if name not in self.hosts:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _refuse(send, 400, f"host {name!r} is not served here: open http://127.0.0.1:PORT "
                                         "(or pass the name to `tracinwe serve --allow-host`)")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_body):
            await _refuse(send, 413, f"request body over {self.max_body} bytes: send a shorter text")
            return
        body, more = [], True
        size = 0
        while more:  # at most max_body bytes are kept: one more chunk ends the loop
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _refuse(send, 413, f"request body over {self.max_body} bytes: send a shorter text")
                return
            body.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body already read, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
