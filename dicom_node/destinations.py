"""A DICOM destination (``AE@host:port``): where result objects are sent."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Destination(BaseModel):
    """A remote Storage SCP."""

    model_config = {"frozen": True}

    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """Parse ``AE@host:port`` (IPv6 hosts in brackets: ``AE@[::1]:104``)."""
        try:
            ae, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            return cls(ae_title=ae, host=host.strip("[]"), port=int(port))
        except ValueError as exc:
            raise ValueError(f"destination {text!r} is not AE@host:port") from exc

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"
