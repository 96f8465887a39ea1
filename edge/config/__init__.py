"""Station configuration: the operator's YAML, typed and checked."""

from edge.config.load import ConfigError, Problem, load_config
from edge.config.models import (
    Config,
    Connection,
    MdnsConnection,
    PrinterConfig,
    StationConfig,
    TcpConnection,
    UsbConnection,
    parse_connection,
)

__all__ = [
    "Config",
    "ConfigError",
    "Connection",
    "MdnsConnection",
    "PrinterConfig",
    "Problem",
    "StationConfig",
    "TcpConnection",
    "UsbConnection",
    "load_config",
    "parse_connection",
]
