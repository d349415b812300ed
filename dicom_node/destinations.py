"""A DICOM destination (``AE@host:port[?objects=sr+gsps]``): where result objects are sent."""

from __future__ import annotations

from urllib.parse import parse_qs

from pydantic import BaseModel, Field, field_validator

RESULT_KINDS = ("sr", "seg", "gsps", "sc", "kos")


class Destination(BaseModel):
    """A remote Storage SCP, optionally with its own choice of result objects."""

    model_config = {"frozen": True}

    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    objects: tuple[str, ...] | None = Field(
        None, description="Result kinds this destination gets (None: the global result_objects)"
    )

    @field_validator("objects")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = set(value or ()) - set(RESULT_KINDS)
        if unknown:
            raise ValueError(f"unknown result kinds {sorted(unknown)}; use {', '.join(RESULT_KINDS)}")
        return value

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """Parse ``AE@host:port`` (IPv6 in brackets: ``AE@[::1]:104``), optionally followed by
        ``?objects=sr+gsps`` for a PACS that should get only some kinds of result objects."""
        address, _, query = text.partition("?")
        try:
            ae, location = address.split("@", 1)
            host, port = location.rsplit(":", 1)
            options = parse_qs(query, strict_parsing=bool(query), keep_blank_values=False)
        except ValueError as exc:
            raise ValueError(f"destination {text!r} is not AE@host:port[?objects=sr+seg]") from exc
        unknown = set(options) - {"objects"}
        if unknown:
            raise ValueError(f"destination {text!r}: unknown option(s) {sorted(unknown)}")
        objects = None
        if "objects" in options:
            objects = tuple(k for item in options["objects"] for k in item.replace(" ", "+").split("+") if k)
        return cls(ae_title=ae, host=host.strip("[]"), port=int(port), objects=objects)

    def kinds(self, default: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """The result kinds to send here: this destination's own choice, else ``default``."""
        return self.objects if self.objects is not None else tuple(default)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        suffix = f"?objects={'+'.join(self.objects)}" if self.objects is not None else ""
        return f"{self.ae_title}@{host}:{self.port}{suffix}"
