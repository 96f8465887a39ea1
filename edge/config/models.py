"""Typed models of the station-config YAML (CONTRACT section 2, plus documented additions).

Unknown keys are errors: a typo such as `catgories:` must not silently route nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

Slug = Annotated[str, Field(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class TcpConnection:
    host: str
    port: int

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True)
class UsbConnection:
    vendor_id: int
    product_id: int
    serial: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.serial}" if self.serial else ""
        return f"usb://{self.vendor_id:04x}:{self.product_id:04x}{tail}"


@dataclass(frozen=True)
class MdnsConnection:
    service_name: str

    def __str__(self) -> str:
        return f"mdns://{self.service_name}"


Connection = TcpConnection | UsbConnection | MdnsConnection

_HEX4 = re.compile(r"^[0-9a-fA-F]{4}$")


def parse_connection(text: str) -> Connection:
    """tcp://HOST:PORT, usb://VID:PID[/SERIAL] or mdns://Service%20Name."""
    scheme, sep, rest = text.partition("://")
    if not sep or not rest:
        raise ValueError(f"'{text}' is not a connection URL (tcp://, usb:// or mdns://)")
    if scheme == "tcp":
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"'{text}': {exc}") from None
        if not parts.hostname:
            raise ValueError(f"'{text}': no host")
        return TcpConnection(parts.hostname, port or 9100)
    if scheme == "usb":
        ids, _, serial = rest.partition("/")
        vid, colon, pid = ids.partition(":")
        if not colon or not _HEX4.match(vid) or not _HEX4.match(pid):
            raise ValueError(f"'{text}': expected usb://VID:PID[/SERIAL] with 4-digit hex ids")
        return UsbConnection(int(vid, 16), int(pid, 16), unquote(serial) or None)
    if scheme == "mdns":
        name = unquote(rest).strip()
        if not name:
            raise ValueError(f"'{text}': no service name")
        return MdnsConnection(name)
    raise ValueError(f"'{text}': unknown scheme '{scheme}' (use tcp://, usb:// or mdns://)")


class MqttConfig(_Strict):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    # Additions: how long the broker keeps our session (and queues orders) while we are away.
    session_expiry: int = Field(default=7 * 24 * 3600, ge=60)
    # MQTT v5 Receive Maximum: unacknowledged messages the broker may have in flight to us.
    receive_maximum: int = Field(default=256, ge=1, le=65535)
    keepalive: int = Field(default=30, ge=5, le=3600)
    # Events per transaction at most: big enough to share one fsync, small enough that a
    # backlog never keeps the spooler off the single writer for long.
    max_batch: int = Field(default=64, ge=1, le=10000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"'{value}': scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"'{value}': no host")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"'{value}': {exc}") from None
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class PrinterConfig(_Strict):
    id: Slug
    connection: str
    profile: str | None = None
    columns: Literal[32, 42, 48] = 48
    # Addition: force a code page instead of choosing one from the profile.
    codepage: str | None = None
    # Addition: ask the printer to push its status (ESC/POS Automatic Status Back, GS a), so a
    # fault clearing is noticed at once rather than at the next poll. Default: on for Epson
    # TM profiles, which have it; off otherwise, since a clone that does not know GS a may
    # print it as text.
    status_back: bool | None = None

    @field_validator("connection")
    @classmethod
    def _connection(cls, value: str) -> str:
        parse_connection(value)
        return value

    @property
    def target(self) -> Connection:
        return parse_connection(self.connection)

    @property
    def pushes_status(self) -> bool:
        if self.status_back is not None:
            return self.status_back
        return (self.profile or "").upper().startswith("TM-")


class StationConfig(_Strict):
    id: Slug
    printer: Slug
    backup: Slug | None = None
    categories: list[str] = Field(default_factory=list)
    # Additions: an expo station gets every item; lead time for scheduled orders.
    all: bool = False
    lead_minutes: int = Field(default=20, ge=0, le=24 * 60)


class RoutingConfig(_Strict):
    default_station: Slug | None = None


class PrintingConfig(_Strict):
    """Addition: spooler timings, in seconds."""

    failover_after: float = Field(default=15.0, ge=0)
    # How long a ticket whose bytes may be in a faulted printer (delivered, not confirmed)
    # waits before one copy marked MAY BE DUPLICATE may print on another printer of its
    # station. Default: failover_after, so a station's tickets move to the backup together.
    unconfirmed_failover_after: float | None = Field(default=None, ge=0)
    late_after: float = Field(default=600.0, ge=0)
    # The cap of the backoff between attempts on a printer that cannot print (reconnects,
    # status polls): well under one a second once it is clearly down, and the longest a
    # printer that does not push its status may go unnoticed once it is back.
    retry_max: float = Field(default=5.0, gt=0, le=60)
    connect_timeout: float = Field(default=3.0, gt=0)
    write_timeout: float = Field(default=5.0, gt=0)
    status_timeout: float = Field(default=1.5, gt=0)

    @property
    def unconfirmed_limit(self) -> float:
        if self.unconfirmed_failover_after is not None:
            return self.unconfirmed_failover_after
        return self.failover_after


class UpstreamConfig(_Strict):
    url: str
    token_file: Path
    batch_records: int = Field(default=500, ge=1, le=5000)
    batch_bytes: int = Field(default=1024 * 1024, ge=1024)
    timeout: float = Field(default=10.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)
    retention_hours: float = Field(default=72.0, ge=0)
    disk_budget_mb: float = Field(default=512.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{value}': must be an http:// or https:// URL")
        return value.rstrip("/")


class HttpConfig(_Strict):
    listen: str = "127.0.0.1:8765"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"'{value}': expected HOST:PORT")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class DiscoveryConfig(_Strict):
    interfaces: list[str] | None = None
    enabled: bool = True
    usb: bool = True
    usb_rescan: float = Field(default=5.0, gt=0)


class AcceptanceConfig(_Strict):
    """Addition: orders a channel sends for the restaurant to accept or reject."""

    # An order still waiting this many seconds prints one ATTENTION ticket (CONTRACT 9: 2 min).
    attention_after: float = Field(default=120.0, ge=0)


class Config(_Strict):
    site: Annotated[str, Field(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)]
    state_dir: Path
    mqtt: MqttConfig = MqttConfig()
    printers: list[PrinterConfig] = Field(default_factory=list)
    stations: list[StationConfig] = Field(default_factory=list)
    routing: RoutingConfig = RoutingConfig()
    printing: PrintingConfig = PrintingConfig()
    upstream: UpstreamConfig | None = None
    http: HttpConfig | None = None
    discovery: DiscoveryConfig = DiscoveryConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # CONTRACT section 8: the IANA zone channel times without an offset are read in.
    timezone: str = "UTC"
    acceptance: AcceptanceConfig = AcceptanceConfig()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not an IANA time zone (e.g. Europe/Istanbul)"
                             ) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def default_station(self) -> str | None:
        """Where items no station lists print, and the kitchen's notices (ATTENTION) go."""
        if self.routing.default_station is not None:
            return self.routing.default_station
        return self.stations[0].id if self.stations else None

    @property
    def root(self) -> str:
        return f"kitchen/{self.site}"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"kitchen-edge-{self.site}"

    def printer(self, printer_id: str) -> PrinterConfig:
        for printer in self.printers:
            if printer.id == printer_id:
                return printer
        raise KeyError(printer_id)

    def station(self, station_id: str) -> StationConfig:
        for station in self.stations:
            if station.id == station_id:
                return station
        raise KeyError(station_id)
