"""A DICOM destination (``AE@host:port[?tls=1&objects=sr+gsps]``): where result objects are sent."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs

from pydantic import BaseModel, Field, field_validator

from dicom_node.kinds import RESULT_KINDS, ResultKind, result_kinds

__all__ = ["RESULT_KINDS", "Destination"]


class Destination(BaseModel):
    """A remote Storage SCP, optionally with its own choice of result objects."""

    model_config = {"frozen": True}

    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    objects: tuple[ResultKind, ...] | None = Field(
        None, description="Result kinds this destination gets (None: the global result_objects)"
    )
    tls: bool = Field(False, description="Send over TLS (``?tls=1``)")
    tls_ca: Path | None = Field(None, description="CA bundle to verify the peer (None: system CAs)")
    tls_cert: Path | None = Field(None, description="Client certificate (mutual TLS)")
    tls_key: Path | None = Field(None, description="Private key of tls_cert")

    @field_validator("objects", mode="before")
    @classmethod
    def _known_kinds(cls, value: object) -> object:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(result_kinds(value))
        return value

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@host:port`` (IPv6 in brackets: ``AE@[::1]:104``), optionally followed by
        ``?objects=sr+gsps`` for a PACS that should get only some kinds of result objects and
        ``tls=1`` to send over TLS (``AE@host:port?tls=1&objects=sr``)."""
        address, _, query = text.partition("?")
        try:
            ae, location = address.split("@", 1)
            host, port = location.rsplit(":", 1)
            options = parse_qs(query, strict_parsing=bool(query), keep_blank_values=False)
        except ValueError as exc:
            raise ValueError(f"destination {text!r} is not AE@host:port[?tls=1&objects=sr+seg]") from exc
        unknown = set(options) - {"objects", "tls"}
        if unknown:
            raise ValueError(f"destination {text!r}: unknown option(s) {sorted(unknown)}")
        objects = None
        if "objects" in options:
            objects = tuple(k for item in options["objects"] for k in item.replace(" ", "+").split("+") if k)
        tls = _flag(text, options.get("tls", ["0"])[-1])
        return cls(ae_title=ae, host=host.strip("[]"), port=int(port), objects=objects, tls=tls)

    def kinds(self, default: Sequence[ResultKind]) -> tuple[ResultKind, ...]:
        """The result kinds to send here: this destination's own choice, else ``default``."""
        return self.objects if self.objects is not None else tuple(default)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        options = ["tls=1"] if self.tls else []
        if self.objects is not None:
            options.append(f"objects={'+'.join(self.objects)}")
        suffix = f"?{'&'.join(options)}" if options else ""
        return f"{self.ae_title}@{host}:{self.port}{suffix}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for this destination (peer verified), or None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert is not None:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def _flag(text: str, value: str) -> bool:
    """``tls=1`` / ``tls=0`` (also true/false, yes/no)."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"destination {text!r}: tls={value!r}, use tls=1 or tls=0")
