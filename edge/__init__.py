"""kitchen-edge: a LAN-first kitchen edge daemon.

Order events arrive on the restaurant's MQTT broker, become kitchen tickets per station on
ESC/POS printers exactly once, and are reported to the cloud core through an outbox.
"""

__version__ = "0.1.0"
