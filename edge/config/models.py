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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from edge.config.menu import Menu

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


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'{value}': must be an http:// or https:// URL")
    return value.rstrip("/")


class UpstreamConfig(_Strict):
    url: str
    token_file: Path
    batch_records: int = Field(default=500, ge=1, le=5000)
    batch_bytes: int = Field(default=1024 * 1024, ge=1024)
    timeout: float = Field(default=10.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)
    retention_hours: float = Field(default=72.0, ge=0)
    disk_budget_mb: float = Field(default=512.0, gt=0)

    _url = field_validator("url")(_http_url)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"'{value}': expected HOST:PORT")
    return value


class _Listener(_Strict):
    """A section with a `listen: HOST:PORT` the daemon serves on."""

    listen: str

    _listen = field_validator("listen")(_host_port)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class HttpConfig(_Listener):
    listen: str = "127.0.0.1:8765"
    # Addition: the operator token (one line, readable by the service user only). Every action
    # of the screens (bump, recall, reprint, retry, accept, reject, 86, store) needs it;
    # viewing does not. Without it the screens are read-only.
    operator_token_file: Path | None = None


class AggregatorConfig(_Listener):
    """CONTRACT section 10: the order API a delivery platform calls (seed 004), and where
    the kitchen's webhooks go. Additions: TLS, and the webhooks' timeout and retry cap."""

    listen: str = "0.0.0.0:8766"
    token_file: Path                     # the platform sends Authorization: Bearer {token}
    webhook_url: str
    webhook_token_file: Path | None = None   # we send Authorization: Bearer {token}
    auto_accept: bool = False
    prep_minutes: int = Field(default=20, ge=0, le=24 * 60)
    # Addition: serve the API over HTTPS with this certificate (PEM, chain first) and key.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Additions: a webhook attempt's time limit, and the cap of the backoff between tries.
    webhook_timeout: float = Field(default=10.0, gt=0, le=120)
    webhook_retry_max: float = Field(default=300.0, gt=0)

    _url = field_validator("webhook_url")(_http_url)

    @model_validator(mode="after")
    def _pair(self) -> AggregatorConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


class KdsConfig(_Strict):
    """Addition: the kitchen display. A card's timer turns amber after `warn_minutes` and
    red after `late_minutes` (fractions allowed)."""

    warn_minutes: float = Field(default=8.0, gt=0, le=24 * 60)
    late_minutes: float = Field(default=15.0, gt=0, le=24 * 60)

    @model_validator(mode="after")
    def _order(self) -> KdsConfig:
        if self.late_minutes < self.warn_minutes:
            raise ValueError(f"late_minutes ({self.late_minutes:g}) is less than warn_minutes "
                             f"({self.warn_minutes:g})")
        return self


class DiscoveryConfig(_Strict):
    interfaces: list[str] | None = None
    enabled: bool = True
    usb: bool = True
    usb_rescan: float = Field(default=5.0, gt=0)


class AcceptanceConfig(_Strict):
    """Addition: orders a channel sends for the restaurant to accept or reject."""

    # An order still waiting this many seconds prints one ATTENTION ticket (CONTRACT 9: 2 min).
    attention_after: float = Field(default=120.0, ge=0)


class RetentionConfig(_Strict):
    """Addition (issue 12, docs/retention.md): what the database keeps, so the file stops
    growing. A final order last changed more than `days` ago is compacted to a tombstone
    once its records are accepted upstream (without an upstream: at once)."""

    enabled: bool = True
    days: float = Field(default=30.0, gt=0)
    # An order that never became final (a POS that never sends `order.completed`) and has not
    # changed for this many days is compacted too, once nothing of it is in flight; without
    # this a kitchen whose bridge never closes orders would keep every order for ever.
    # null keeps them.
    open_days: float | None = Field(default=90.0, gt=0)
    # The newest this many dead letters and activity entries are kept.
    max_dead_letters: int = Field(default=1000, ge=10)
    max_activities: int = Field(default=200_000, ge=100)
    # Tombstones (what keeps a late duplicate of a compacted order from printing, about 210
    # bytes an order) go a year after they were made, so the file stops growing in steady
    # state (issue 12); a year is far beyond any redelivery (MQTT sessions expire after
    # `mqtt.session_expiry`, marketplaces list recent orders). null keeps them for ever.
    tombstone_days: float | None = Field(default=365.0, gt=0)
    # How often a pass runs (minutes), and the rows deleted per transaction.
    every_minutes: float = Field(default=60.0, gt=0, le=24 * 60)
    chunk_rows: int = Field(default=300, ge=10, le=10_000)
    # Free pages handed back to the file system per transaction (4 KiB each).
    vacuum_pages: int = Field(default=256, ge=1, le=10_000)

    @model_validator(mode="after")
    def _tombstones_outlive_orders(self) -> RetentionConfig:
        if self.tombstone_days is not None and self.tombstone_days < self.days:
            raise ValueError(f"tombstone_days ({self.tombstone_days:g}) is less than days "
                             f"({self.days:g})")
        if self.open_days is not None and self.open_days < self.days:
            raise ValueError(f"open_days ({self.open_days:g}) is less than days "
                             f"({self.days:g})")
        return self


class MarketplaceConfig(_Strict):
    """CONTRACT section 9: one seed 001 delivery marketplace the kitchen polls for orders."""

    id: Slug                          # kitchen order id = "{id}-{marketplace order id}"
    url: str                          # base of the seed 001 API
    token_file: Path                  # sent as Authorization: Bearer {token}; a secret
    poll_seconds: float = Field(default=15, gt=0, le=3600)
    auto_accept: bool = False
    # Preparing time for auto_accept, and when order.accepted has none (minutes).
    prep_minutes: int = Field(default=20, ge=1, le=240)
    # A scheduled order starts printing this long before its time; absent: each station's
    # own lead_minutes.
    lead_minutes: int | None = Field(default=None, ge=0, le=24 * 60)
    # The kitchen's reason codes to the marketplace's cancel reason ids; unmapped: 8 (Other).
    cancel_reasons: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
                         Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=dict)
    # Additions: the currency shown on a cash ticket's amount; HTTP time-out (seconds); the
    # longest wait between polls while the marketplace does not answer.
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    timeout: float = Field(default=10.0, gt=0, le=120)
    backoff_max: float = Field(default=60.0, gt=0, le=3600)

    _url = field_validator("url")(_http_url)


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
    kds: KdsConfig = KdsConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # CONTRACT section 8: the IANA zone channel times without an offset are read in.
    timezone: str = "UTC"
    acceptance: AcceptanceConfig = AcceptanceConfig()
    retention: RetentionConfig = RetentionConfig()
    marketplaces: list[MarketplaceConfig] = Field(default_factory=list)
    aggregator: AggregatorConfig | None = None
    # CONTRACT section 8: the POS's table ids (absent: any table id), and the menu file.
    tables: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    menu: Path | None = None
    # The menu file as read and checked by the loader (`edge.config.load`).
    _menu: Menu | None = PrivateAttr(default=None)

    @property
    def menu_data(self) -> Menu | None:
        """The products of the menu file, or None without one."""
        return self._menu

    def with_menu(self, menu: Menu | None) -> Config:
        self._menu = menu
        return self

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
