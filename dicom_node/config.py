"""Settings for the node and the workers (pydantic-settings).

Precedence, highest first: values passed in code, ``MEDDET_*`` environment variables, the TOML
file given with ``--config`` (or ``MEDDET_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dicom_node.allowlist import parse_network
from dicom_node.destinations import Destination
from dicom_node.kinds import RESULT_KINDS, SR_KINDS, ResultKind, SrKind, result_kinds, sr_kind
from dicom_node.limits import (
    DEFAULT_ACSE_TIMEOUT,
    DEFAULT_ASSOCIATION_TIME_LIMIT,
    DEFAULT_MAX_INSTANCE_BYTES,
    DEFAULT_MAX_PDU,
    DEFAULT_MAX_PIXELS,
    DEFAULT_NETWORK_TIMEOUT,
)

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
MASK = "***"
# scheme://user:PASSWORD@host: the password runs to the last "@" of the URL.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):[^\s'\"]+@")
_QUERY_PASSWORD = re.compile(r"(?i)\b(?P<key>password|passwd|pwd)=[^&\s'\"]+")


def _default_result_objects() -> list[ResultKind]:
    return ["sr", "seg", "gsps"]


class Settings(BaseSettings):
    """Effective configuration. Every field maps to ``MEDDET_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MEDDET_", extra="forbid", frozen=True)

    # Listener
    ae_title: str = Field("MEDDET", max_length=16, description="Our AE title")
    host: str = Field("127.0.0.1", description="Address the SCP binds to")
    port: int = Field(11112, ge=0, le=65535, description="DICOM port (0 = pick a free one)")
    allowed_aes: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Calling AE allow-list")
    allowed_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Source IP allow-list: addresses or CIDR ranges"
    )
    accept_any_ae: bool = Field(False, description="Required to bind beyond loopback without an allow-list")
    accept_any_called_ae: bool = Field(False, description="Accept associations whatever Called AE Title they ask for")
    max_associations: int = Field(16, ge=1, description="Concurrent associations")
    disk_watermark: float = Field(95.0, gt=0, le=100, description="Refuse C-STORE when the spool disk is this % full")
    tls_cert: Path | None = Field(None, description="PEM certificate: enables TLS")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert")
    tls_ca: Path | None = Field(None, description="CA bundle: require client certificates")
    tls_bind_ae: bool = Field(
        True,
        description="With client certificates (tls_ca): the calling AE title must be the "
        "certificate's subject CN or one of its DNS names, so one certificate cannot speak as another AE",
    )

    # Limits on what one peer can make the node hold (issue 12)
    max_pdu: int = Field(
        DEFAULT_MAX_PDU,
        ge=4096,
        le=1 << 30,
        description="Largest PDU accepted and announced (bytes); a longer one aborts",
    )
    max_instance_bytes: int = Field(
        DEFAULT_MAX_INSTANCE_BYTES,
        ge=1 << 16,
        description="Largest instance, as received or inflated (bytes); bigger: refused 0xA701",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1 << 16,
        description="Largest image, Rows x Columns x frames, per instance and per analysed series",
    )
    network_timeout: float = Field(
        DEFAULT_NETWORK_TIMEOUT,
        gt=0,
        description="Seconds an association may idle, or take to deliver one PDU",
    )
    acse_timeout: float = Field(
        DEFAULT_ACSE_TIMEOUT,
        gt=0,
        description="Seconds for the TLS handshake and for the association request",
    )
    association_time_limit: float = Field(
        DEFAULT_ASSOCIATION_TIME_LIMIT,
        gt=0,
        description="Seconds an association may last in all; then it is aborted",
    )

    # Durability and Storage Commitment (issue 14; docs/conformance.md 2.4)
    durability: Literal["group", "per-instance"] = Field(
        "group",
        description="group: C-STORE success after the atomic write, fsync in groups every <= 20 ms; "
        "per-instance: fsync before each success",
    )
    commitment_association: Literal["same", "new"] = Field(
        "same",
        description="Storage Commitment N-EVENT-REPORT: on the requesting association while it is "
        "open (else a new one), or always on a new association",
    )
    commitment_peers: Annotated[list[Destination], NoDecode] = Field(
        default_factory=list,
        description="Where N-EVENT-REPORTs on new associations go, by requesting AE: AE@host:port, comma-separated",
    )
    commitment_timeout: float = Field(
        60.0, gt=0, description="Seconds a Storage Commitment waits for its instances to be flushed and recorded"
    )

    # Storage
    data_dir: Path = Field(Path("meddet-data"), description="Spool, quarantine, results, DB")
    database_url: str | None = Field(None, description="SQLAlchemy URL (default: SQLite)")
    spool_retention_hours: float = Field(72.0, ge=0, description="Keep finished spool files")
    quarantine_retention_days: float = Field(30.0, ge=0, description="Keep quarantined files")
    prune_older_than_days: float | None = Field(
        None,
        gt=0,
        description="The node's retention pass also runs `meddet db prune` for this age (days); unset = off",
    )

    # Pipeline
    quiet_period: float = Field(30.0, gt=0, description="Seconds without instances = complete")
    rules_file: Path | None = Field(None, description="Selection rules TOML (default: built-in)")
    broker_url: str | None = Field(None, description="Redis URL; unset = embedded worker")
    checkpoint: Path | None = Field(None, description="Detector checkpoint (default: shipped)")
    device: str = Field("auto", description="torch device for the detector: auto, cpu, cuda")
    destination_tls_ca: Path | None = Field(
        None, description="CA bundle that destinations with ?tls=1 are verified against (default: system CAs)"
    )
    destination_tls_cert: Path | None = Field(
        None, description="PEM client certificate sent to destinations with ?tls=1 (mutual TLS)"
    )
    destination_tls_key: Path | None = Field(None, description="PEM private key for destination_tls_cert")
    destinations: Annotated[list[Destination], NoDecode] = Field(
        default_factory=list,
        description="Where results go: AE@host:port[?tls=1][&objects=sr+gsps], comma-separated",
    )
    result_objects: Annotated[list[ResultKind], NoDecode] = Field(
        default_factory=_default_result_objects,
        description=f"Result objects to write: {', '.join(RESULT_KINDS)}",
    )
    sr_kind: SrKind = Field("3d", description=f"SR IOD: {', '.join(SR_KINDS)} (3d: 88.34, comprehensive: 88.33)")
    send_retries: int = Field(5, ge=0, description="Retries per job when a PACS is unreachable")
    job_lease_seconds: float = Field(
        60.0, gt=0, description="A running job's lease; its worker renews it every third of this"
    )
    max_deliveries: int = Field(3, ge=1, description="A job whose worker is lost (lease expired) this often is failed")
    job_republish_seconds: float = Field(
        600.0,
        gt=0,
        description="A queued job no worker has claimed this long after its message "
        "went out is published again (a broker restarted without persistence loses its queue)",
    )

    # Operations
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus endpoint")
    metrics_host: str = Field("127.0.0.1", description="Address of the metrics endpoint (0.0.0.0 in containers)")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(False, description="JSON log lines instead of console format")

    # Web console (issue 15; dicom_node/console)
    console_host: str = Field("127.0.0.1", description="Address the web console binds to")
    console_port: int = Field(8080, ge=0, le=65535, description="Web console port (0 = off)")
    console_tls_cert: Path | None = Field(None, description="PEM certificate: console over HTTPS")
    console_tls_key: Path | None = Field(None, description="PEM private key for console_tls_cert")
    console_session_hours: float = Field(12.0, gt=0, description="A console login lasts this long")
    console_lockout_attempts: int = Field(5, ge=1, description="Wrong passwords in a row that lock a console user out")
    console_lockout_minutes: float = Field(15.0, gt=0, description="How long a lock-out lasts")

    @field_validator("allowed_aes", "allowed_ips", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("result_objects", mode="before")
    @classmethod
    def _check_result_objects(cls, value: Any) -> Any:
        """Comma-separated or a list; an unknown kind stops the start with the allowed list."""
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return result_kinds(value)
        return value

    @field_validator("allowed_ips")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_network(entry)
        return value

    @field_validator("destinations", "commitment_peers", mode="before")
    @classmethod
    def _parse_destinations(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        return [Destination.parse(v) if isinstance(v, str) else v for v in value]

    @field_validator("destinations")
    @classmethod
    def _destination_tls_files(cls, value: list[Destination], info: ValidationInfo) -> list[Destination]:
        """Give each ``?tls=1`` destination the MEDDET_DESTINATION_TLS_* files."""
        files = {
            "tls_ca": info.data.get("destination_tls_ca"),
            "tls_cert": info.data.get("destination_tls_cert"),
            "tls_key": info.data.get("destination_tls_key"),
        }
        return [d.model_copy(update=files) if d.tls else d for d in value]

    @field_validator("sr_kind", mode="before")
    @classmethod
    def _check_sr_kind(cls, value: Any) -> Any:
        return sr_kind(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_exposure(self) -> Settings:
        exposed = self.host not in LOOPBACK_HOSTS
        if exposed and not (self.allowed_aes or self.allowed_ips or self.accept_any_ae):
            raise ValueError(
                f"host={self.host} listens beyond loopback with no allow-list: set "
                "MEDDET_ALLOWED_AES / MEDDET_ALLOWED_IPS, or MEDDET_ACCEPT_ANY_AE=true on purpose"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if (self.destination_tls_cert is None) != (self.destination_tls_key is None):
            raise ValueError("destination_tls_cert and destination_tls_key must be set together")
        if (self.console_tls_cert is None) != (self.console_tls_key is None):
            raise ValueError("console_tls_cert and console_tls_key must be set together")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file (if any) comes from model_config["toml_file"]: see load_settings().
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    # Derived paths: state you can see on disk, one folder per stage (mercure style).
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def incoming_tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'meddet.db').resolve()}"

    @property
    def embedded(self) -> bool:
        return not self.broker_url


def config_path(config_file: Path | None = None) -> Path | None:
    """The TOML file to read: ``--config``, else ``MEDDET_CONFIG``, else none."""
    path = config_file or (Path(os.environ["MEDDET_CONFIG"]) if os.environ.get("MEDDET_CONFIG") else None)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return path


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings once (the CLI calls this and passes the result down)."""
    path = config_path(config_file)
    if path is None:
        return Settings(**overrides)
    with_file = cast(  # a subclass made by type(): mypy sees only ``type``
        "type[Settings]",
        type("Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}),
    )
    return with_file(**overrides)


def setting_sources(settings: Settings, config_file: Path | None = None) -> dict[str, str]:
    """Where each effective value came from: 'env', 'toml (<path>)', or 'default'."""
    path = config_path(config_file)
    toml_values = tomllib.loads(path.read_text()) if path else {}
    result = {}
    for name in Settings.model_fields:
        if f"MEDDET_{name.upper()}" in os.environ:
            result[name] = "env"
        elif name in toml_values:
            result[name] = f"toml ({path})"
        else:
            result[name] = "default"
    return result


def mask_secrets(text: str) -> str:
    """``text`` with URL passwords (``scheme://user:pw@host``, ``?password=pw``) replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}={MASK}", text)


def masked_values(settings: Settings) -> dict[str, Any]:
    """Effective values for display (``meddet config show``), passwords masked."""

    def mask(value: Any) -> Any:
        if isinstance(value, str):
            return mask_secrets(value)
        if isinstance(value, list):
            return [mask(item) for item in value]
        return value

    return {name: mask(value) for name, value in settings.model_dump(mode="json").items()}


def describe_config_error(exc: Exception) -> str:
    """A configuration error for people: each bad setting and why, never the values given
    (pydantic echoes inputs, and shortens them so a URL's password can lose its scheme)."""
    if not isinstance(exc, ValidationError):
        return mask_secrets(str(exc))
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        name = ".".join(str(part) for part in error["loc"])
        where = f"{name} (MEDDET_{name.upper()})" if name else "settings"
        lines.append(f"{where}: {error['msg']}")
    return mask_secrets("\n".join(lines))
