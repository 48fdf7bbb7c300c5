"""Access control: token and Grafana-session auth, roles, Host/Origin, rate limits, the audit trail."""
