"""`kitchen-edge virtual-printer`: run the virtual printer until SIGTERM/SIGINT.

Once both servers listen, one JSON line goes to stdout for a parent process to read:
{"event": "listening", "host": ..., "port": ..., "control_port": ..., "pid": ..., "out": ...}
Logs are JSON lines on stdout too. --control-port 0 (the default) picks a free port;
-1 runs without the control interface.
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
from edge.virtual_printer.server import VirtualPrinter

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


async def _serve(args: argparse.Namespace, advertiser: Advertiser | None) -> None:
    printer = VirtualPrinter(
        args.out,
        host=args.host,
        port=args.port,
        profile=args.profile,
        png=not args.no_png,
        paper_dots=args.paper_dots,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await printer.start()
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
            }
            print(json.dumps(announce), flush=True)
            await stop.wait()
            log.info("shutdown_requested")
    finally:
        if control is not None:
            await control.stop()
        await printer.stop()


def run(args: argparse.Namespace) -> int:
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
        asyncio.run(_serve(args, advertiser))
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
