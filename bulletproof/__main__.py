"""`python -m bulletproof` is the `bulletproof` command."""

from __future__ import annotations

from bulletproof.cli import main

if __name__ == "__main__":
    main()
