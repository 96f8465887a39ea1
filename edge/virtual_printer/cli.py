"""`kitchen-edge virtual-printer`: run the virtual printer until SIGTERM/SIGINT.

Once both servers listen, one JSON line goes to stdout for a parent process to read:
{"event": "listening", "host": ..., "port": ..., "control_port": ..., "pid": ..., "out": ...,
 "buffer_bytes": ..., "mode": {"mode", "after_bytes", "bytes_per_second"}}
Logs are JSON lines on stdout too. --control-port 0 (the default) picks a free port;
-1 runs without the control interface.

How unkind it starts: --buffer-bytes (receive buffer, default 4096, 0 = unlimited),
--mode normal|hung|drop|slow with --drop-after-bytes N (drop) and --bytes-per-second N (slow,
default 300), --state (the paper/cover state at power-on). All of them can be changed later
over the control interface (see `control`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import structlog

from edge.virtual_printer.control import ControlServer
from edge.virtual_printer.faults import DEFAULT_BYTES_PER_SECOND, FieldError, Mode, ModeSettings
from edge.virtual_printer.server import DEFAULT_BUFFER_BYTES, VirtualPrinter
from edge.virtual_printer.status import PrinterState

log = structlog.get_logger(__name__)

Advertiser = Callable[..., AbstractAsyncContextManager[Any]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9100, help="ESC/POS port (0 = any free)")
    parser.add_argument("--out", required=True, help="directory for NNNN.bin/.txt/.png")
    parser.add_argument("--control-host", default="127.0.0.1")
    parser.add_argument(
        "--control-port", type=int, default=0,
        help="HTTP control interface port; 0 picks a free one, -1 disables it",
    )
    parser.add_argument("--profile", default="default", help="python-escpos capability profile")
    parser.add_argument("--paper-dots", type=int, default=None,
                        help="printable width in dots (default: profile's, else 576)")
    parser.add_argument("--no-png", action="store_true", help="do not render PNGs")
    parser.add_argument("--advertise", metavar="NAME", default=None,
                        help="advertise the printer over mDNS under this service name")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--buffer-bytes", type=_non_negative, default=DEFAULT_BUFFER_BYTES,
        help="receive buffer: while the paper is out (cover open, error) and this much is "
             "held, the printer stops reading (TCP back-pressure); 0 = unlimited "
             f"(default {DEFAULT_BUFFER_BYTES}, like a TM-T88)",
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.NORMAL.value,
                        help="fault mode: hung never reads or answers, drop closes every "
                             "connection, slow reads --bytes-per-second")
    parser.add_argument("--drop-after-bytes", type=_non_negative, default=None, metavar="N",
                        help="with --mode drop: read N bytes of print data before dropping")
    parser.add_argument("--bytes-per-second", type=_positive, default=None, metavar="N",
                        help=f"with --mode slow (default {DEFAULT_BYTES_PER_SECOND})")
    parser.add_argument("--state", choices=[s.value for s in PrinterState if s.powered],
                        default=PrinterState.ONLINE.value, help="paper/cover state at start")


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def mode_settings(args: argparse.Namespace) -> ModeSettings:
    """The --mode flags as ModeSettings; raises FieldError naming the flag's field."""
    body: dict[str, object] = {"mode": args.mode}
    if args.drop_after_bytes is not None:
        body["after_bytes"] = args.drop_after_bytes
    if args.bytes_per_second is not None:
        body["bytes_per_second"] = args.bytes_per_second
    return ModeSettings.parse(body)


def _configure_logging(level: str) -> None:
    try:
        from edge.log import configure
    except ImportError:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
            logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        )
        return
    configure(level)


def _load_advertiser() -> Advertiser:
    module = importlib.import_module("edge.discovery.advertise")
    return cast(Advertiser, module.advertise)


async def _serve(
    args: argparse.Namespace, mode: ModeSettings, advertiser: Advertiser | None
) -> None:
    printer = VirtualPrinter(
        args.out,
        host=args.host,
        port=args.port,
        profile=args.profile,
        png=not args.no_png,
        paper_dots=args.paper_dots,
        buffer_bytes=args.buffer_bytes,
        mode=mode,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await printer.start()
    await printer.set_state(args.state)
    control: ControlServer | None = None
    try:
        if args.control_port >= 0:
            control = ControlServer(printer, args.control_host, args.control_port)
            await control.start()
        async with contextlib.AsyncExitStack() as stack:
            if advertiser is not None:
                await stack.enter_async_context(
                    advertiser(args.advertise, printer.port, host=args.host)
                )
            announce = {
                "event": "listening",
                "host": args.host,
                "port": printer.port,
                "control_port": control.port if control else None,
                "pid": os.getpid(),
                "out": str(printer.out_dir),
                "buffer_bytes": printer.buffer_bytes,
                "mode": printer.mode.to_dict(),
            }
            print(json.dumps(announce), flush=True)
            await stop.wait()
            log.info("shutdown_requested")
    finally:
        if control is not None:
            await control.stop()
        await printer.stop()


def run(args: argparse.Namespace) -> int:
    try:
        mode = mode_settings(args)
    except FieldError as exc:
        flag = {"after_bytes": "--drop-after-bytes", "bytes_per_second": "--bytes-per-second"}
        print(f"kitchen-edge virtual-printer: {flag.get(exc.field, '--' + exc.field)}: "
              f"{exc.message}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level)
    advertiser: Advertiser | None = None
    if args.advertise:
        try:
            advertiser = _load_advertiser()
        except (ImportError, AttributeError) as exc:
            print(
                f"kitchen-edge virtual-printer: --advertise needs edge.discovery.advertise "
                f"(mDNS), which is not available: {exc}",
                file=sys.stderr,
            )
            return 2
    try:
        asyncio.run(_serve(args, mode, advertiser))
    except OSError as exc:
        print(f"kitchen-edge virtual-printer: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kitchen-edge virtual-printer")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
