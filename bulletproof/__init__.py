"""Bulletproof: a folder-watching video transcoder with a typed event seam for observability."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
