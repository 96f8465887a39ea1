"""The local HTTP server: health, order timelines and activities, metrics, the status board,
and the screens (the kitchen display and the operator page, CONTRACT section 12). It depends
on small protocols (`edge.component.Health`, `Intake`, `Board`) and the store, never on the
daemon."""

from edge.web.server import WebServer, make_app

__all__ = ["WebServer", "make_app"]
