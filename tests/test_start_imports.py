"""What the daemon imports at start decides most of its RSS (issue 12): libraries it only
needs for a rare ticket line, a screen page or a printer found by mDNS are imported when
first needed, and the optional extras a development venv holds are never imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Not at start: Pillow (a ticket line no code page holds, a preview), python-escpos's printer
# classes and what they pull in (barcode, QR codes), jinja2 (the screens' pages), zeroconf
# (mDNS printers), the virtual printer (the command line once built its arguments), and the
# development venv's extras (edge.cli.DEV_EXTRAS).
LAZY = ("PIL", "escpos.escpos", "escpos.printer", "barcode", "qrcode", "jinja2", "zeroconf",
        "edge.virtual_printer", "rich", "pygments", "click", "trio", "socks")

# What `kitchen-edge run` does before the daemon runs (the command line, the extras hidden,
# edge.daemon), then every module its component factories import for the shipped config.
PROBE = """
import json, sys
from edge.cli import build_parser, hide_dev_extras
build_parser().parse_args(["run", "--config", "station.yaml"])
hide_dev_extras()
import edge.daemon, edge.web, edge.printing.preview, edge.upstream.component
import edge.service.component, edge.service.retention, edge.connectors.openapp.component
import edge.discovery.component
print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))
"""


def test_the_daemon_starts_without_its_lazy_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout))
    early = sorted(name for name in loaded
                   if any(name == lazy or name.startswith(lazy + ".") for lazy in LAZY))
    assert early == []
