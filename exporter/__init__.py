"""The observability plugin: Prometheus metrics, the aiohttp control API and the WebSocket event
stream, served from the monitor's own process (`bulletproof run`)."""
