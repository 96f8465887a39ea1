"""Running kitchen-edge as a real kitchen service: systemd notification and Prometheus metrics."""
