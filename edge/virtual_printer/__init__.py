"""A virtual ESC/POS network printer for the demo, the end-to-end tests and the benchmark.

`VirtualPrinter` is the in-process API; `ControlServer` serves it over HTTP; the CLI
(`kitchen-edge virtual-printer`, `python -m edge.virtual_printer`) runs both. How unkind it
is (receive buffer, ASB, fault modes, power cycles) and the evidence it keeps are described
in `server`, `faults` and `evidence`, and in docs/virtual-printer.md.
"""

from edge.virtual_printer.evidence import ConnectionRecord, ReceivedTicket
from edge.virtual_printer.faults import Mode, ModeSettings
from edge.virtual_printer.model import Job, Page
from edge.virtual_printer.server import VirtualPrinter
from edge.virtual_printer.status import PrinterState

__all__ = [
    "ConnectionRecord",
    "Job",
    "Mode",
    "ModeSettings",
    "Page",
    "PrinterState",
    "ReceivedTicket",
    "VirtualPrinter",
]
