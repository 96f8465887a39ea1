"""Connectors: the code that talks to ordering channels outside the restaurant."""
