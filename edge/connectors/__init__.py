"""Connectors to ordering channels outside the restaurant: marketplaces, aggregators."""
