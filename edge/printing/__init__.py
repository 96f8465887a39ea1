"""Kitchen printing: routing, job keys, ticket rendering, transports and the spooler."""
