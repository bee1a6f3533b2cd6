"""Run an ASGI app on uvicorn in a background thread with its own event loop.

Tests run on pytest-asyncio's loop; the server keeps serving on its own, so a test that awaits
the server (or blocks briefly on a control call) never deadlocks it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING, Self

import uvicorn

from zapgate.wapi.simulator.app import create_app
from zapgate.wapi.simulator.engine import SimulatorEngine
from zapgate.wapi.simulator.handle import Simulator
from zapgate.wapi.simulator.protocol import ClosableHttpProtocol

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from starlette.types import ASGIApp

_START_TIMEOUT_S = 10.0


class BackgroundServer:
    """uvicorn serving `app` on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(
        self,
        app_factory: Callable[[Callable[[], None]], ASGIApp],
        host: str = "127.0.0.1",
        *,
        http: type[asyncio.Protocol] | str = "auto",
    ) -> None:
        self._ready = threading.Event()
        self._app_ready = False
        self._app = app_factory(self._on_ready)
        self._host = host
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it every answer stalls ~40 ms on Nagle + delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        # Listening before uvicorn starts: early connections wait in the backlog instead of
        # being refused, so "started" only needs the app's lifespan to have run.
        self._socket.listen(128)
        self.port: int = self._socket.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._app,
                lifespan="on",
                # An embedded server must not reconfigure the process's logging: uvicorn's
                # default log_config gives its loggers their own handlers, and access_log=False
                # turns off propagation of "uvicorn.access", so later lines of the process under
                # test bypass its JSON logging. The warning level keeps access lines out.
                log_config=None,
                log_level="warning",
                http=http,
            )
        )
        self._thread = threading.Thread(target=self._run, name=f"asgi-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        # The lifespan's on_ready (or the thread ending) sets the event: no polling.
        if not self._ready.wait(_START_TIMEOUT_S) or not self._app_ready:
            self.stop()
            raise RuntimeError(f"server on {self.url} did not start") from self._error

    def stop(self, before: Callable[[], None] | None = None) -> None:
        """Ask uvicorn to exit (after running `before` on the server loop) and join the thread."""
        if self._thread.is_alive():
            if before is not None:
                self.loop.call_soon_threadsafe(before)
            self._server.should_exit = True
            self._thread.join(_START_TIMEOUT_S)
        self._socket.close()

    def _on_ready(self) -> None:
        self._app_ready = True
        self._ready.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except Exception as exc:  # noqa: BLE001 - kept for start(): a thread cannot raise to its caller
            self._error = exc
        finally:
            self._ready.set()
            self.loop.close()


class SimulatorServer:
    """A W-API simulator over real HTTP on a free port; `simulator` drives it from any loop."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.engine = SimulatorEngine()
        self._server = BackgroundServer(
            lambda ready: create_app(self.engine, on_ready=ready),
            host,
            http=ClosableHttpProtocol,
        )
        self.simulator = Simulator(self.engine, self._server.loop)

    @property
    def url(self) -> str:
        """Root URL (the `/_sim/` control API lives here)."""
        return self._server.url

    @property
    def base_url(self) -> str:
        """What `WapiClient(base_url=...)` should point at."""
        return self._server.url + "/v1"

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        # Hanging requests are released first, or uvicorn would wait on them forever.
        self._server.stop(before=self.engine.release_hangs)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
