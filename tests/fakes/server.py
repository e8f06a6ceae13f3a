"""What every loopback fake shares: serving on 127.0.0.1:0, and the knobs.

Knobs on each fake: a latency per call (or per kind of call, by path), a fault schedule
(the next N calls answer with a given status, Retry-After header and body, or answer
slowly), a log of every call, and the highest number of calls in flight at once.
Benchmarks use the same fakes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    started: float
    ended: float = 0.0
    status: int = 0


@dataclass
class Fault:
    """One scheduled misbehaviour; `status=None` with `delay` is a slow success."""

    status: int | None = 503
    retry_after: float | None = None  # seconds, sent as a Retry-After header
    body: dict[str, Any] | None = None  # None: the fake's own error body for the status
    delay: float = 0.0
    path_contains: str = ""  # only calls whose path contains this take the fault


ErrorBody = Callable[[int, Fault], dict[str, Any]]


@dataclass
class FakeState:
    """The knobs and the record of one fake."""

    latency: float = 0.0
    # Per kind of call: the first fragment the call's path contains sets its latency
    # (e.g. {"/text-to-speech": 0.5}); a path that matches none takes `latency`.
    latencies: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    faults: deque[Fault] = field(default_factory=deque)
    # Every Nth call fails transiently (0: never); for "20% of calls fail" runs.
    fail_every: int = 0
    fail_status: int = 503
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: int = 0

    def schedule(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.faults.clear()
            self.in_flight = self.max_in_flight = self._seen = 0
            self.latency = 0.0
            self.latencies.clear()
            self.fail_every = 0

    def latency_for(self, path: str) -> float:
        """The latency of a call to this path."""
        for fragment, seconds in self.latencies.items():
            if fragment in path:
                return seconds
        return self.latency

    def calls_to(self, fragment: str) -> list[Call]:
        return [c for c in self.calls if fragment in c.path]

    def _enter(self, path: str) -> Fault | None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._seen += 1
            for i, fault in enumerate(self.faults):
                if fault.path_contains in path:
                    del self.faults[i]
                    return fault
            if self.fail_every and self._seen % self.fail_every == 0:
                return Fault(status=self.fail_status, retry_after=0.01)
            return None

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class FaultMiddleware:
    """Records each call, applies latency and scheduled faults, counts calls in flight."""

    def __init__(self, app: ASGIApp, state: FakeState, error_body: ErrorBody) -> None:
        self.app = app
        self.state = state
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        body = await request.body()
        started = time.monotonic()
        fault = self.state._enter(request.url.path)
        status_box = [0]
        logged = [False]

        def log() -> None:
            # Logged before the last byte of the answer leaves: a test that reads the
            # log right after its call returns always finds the call there.
            if logged[0]:
                return
            logged[0] = True
            self.state._leave()
            self.state.calls.append(
                Call(
                    method=request.method,
                    path=request.url.path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    query=dict(request.query_params),
                    body=body,
                    started=started,
                    ended=time.monotonic(),
                    status=status_box[0],
                )
            )

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def record_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                log()
            await send(message)

        try:
            delay = self.state.latency_for(request.url.path) + (fault.delay if fault else 0.0)
            if delay:
                await asyncio.sleep(delay)
            if fault is not None and fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                payload = fault.body if fault.body is not None else self.error_body(
                    fault.status, fault
                )
                response: Response = JSONResponse(payload, fault.status, headers=headers)
                await response(scope, replay, record_send)
            else:
                await self.app(scope, replay, record_send)
        finally:
            log()


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 on a free port, in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


AsyncHandler = Callable[[Request], Awaitable[Response]]
