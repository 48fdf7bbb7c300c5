"""Monitoring as code: the Prometheus rules and Grafana dashboards of the exporter's metrics."""
