"""The local HTTP server (health, order timelines and activities, metrics); the kitchen
screens will be served from here too. It depends on the small `edge.component.Health`
protocol and the store, never on the daemon."""

from edge.web.server import WebServer, make_app

__all__ = ["WebServer", "make_app"]
