"""`python -m edge.virtual_printer`: the same as `kitchen-edge virtual-printer`."""

from edge.virtual_printer.cli import main

raise SystemExit(main())
