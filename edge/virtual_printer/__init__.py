"""A virtual ESC/POS network printer for the demo, the end-to-end tests and the benchmark.

`VirtualPrinter` is the in-process API; `ControlServer` serves it over HTTP; the CLI
(`kitchen-edge virtual-printer`, `python -m edge.virtual_printer`) runs both.
"""

from edge.virtual_printer.model import Job, Page
from edge.virtual_printer.server import VirtualPrinter
from edge.virtual_printer.status import PrinterState

__all__ = ["Job", "Page", "PrinterState", "VirtualPrinter"]
