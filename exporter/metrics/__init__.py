"""Prometheus metrics: event-fed counters and histograms, the scrape-time state collector."""
