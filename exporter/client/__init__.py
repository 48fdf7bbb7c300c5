"""The API client and its `bulletproof` commands (status, jobs, pause, audit...)."""
