"""Connectors to ordering channels outside the restaurant: marketplaces and aggregators."""
