"""Serving the console with uvicorn: on a thread of ``meddet serve``, or in the foreground for
``meddet console``. uvicorn's own access log is off (it prints query strings); the app logs
each request without them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import LOOPBACK_HOSTS, Settings
from dicom_node.console.actions import NO_OPERATIONS, Operations
from dicom_node.logging import get_logger

log = get_logger(__name__)


def _config(
    settings: Settings,
    sessions: sessionmaker[Session],
    model_version: str,
    metrics_registry: Any = None,
    operations: Operations = NO_OPERATIONS,
) -> Any:
    import uvicorn

    from dicom_node.console.app import create_app

    app = create_app(settings, sessions, model_version, metrics_registry, operations)
    tls: dict[str, Any] = {}
    if settings.console_tls_cert is not None:
        tls = {"ssl_certfile": str(settings.console_tls_cert), "ssl_keyfile": str(settings.console_tls_key)}
    elif settings.console_host not in LOOPBACK_HOSTS:
        log.warning(
            "console_without_tls",
            host=settings.console_host,
            hint="set MEDDET_CONSOLE_TLS_CERT/KEY or put an HTTPS proxy in front",
        )
    return uvicorn.Config(
        app,
        host=settings.console_host,
        port=settings.console_port,
        access_log=False,
        log_config=None,
        server_header=False,
        lifespan="off",
        **tls,
    )


class ConsoleThread:
    """The console beside the node: ``start()`` returns once it listens, ``stop()`` ends it."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        model_version: str,
        metrics_registry: Any = None,
        operations: Operations = NO_OPERATIONS,
    ) -> None:
        import uvicorn

        self.settings = settings
        self.server = uvicorn.Server(_config(settings, sessions, model_version, metrics_registry, operations))
        self.thread = threading.Thread(target=self.server.run, name="console", daemon=True)

    def start(self, timeout: float = 30.0) -> ConsoleThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(
                    f"web console could not start on {self.settings.console_host}:{self.settings.console_port}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("web console did not start in time")
            time.sleep(0.05)
        scheme = "https" if self.settings.console_tls_cert else "http"
        log.info("console listening", url=f"{scheme}://{self.settings.console_host}:{self.settings.console_port}/")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_forever(
    settings: Settings, sessions: sessionmaker[Session], model_version: str, operations: Operations = NO_OPERATIONS
) -> None:
    """``meddet console``: the console alone, until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.Server(_config(settings, sessions, model_version, operations=operations)).run()
