"""The HTTP server: the aiohttp app, the /api/v1 routes, the WebSocket hub, JSON errors, OpenAPI."""
