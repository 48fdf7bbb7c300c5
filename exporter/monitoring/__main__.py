"""`python -m exporter.monitoring`: regenerate grafana/dashboards/*.json and prometheus/rules/*.yml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter.monitoring.config import DEFAULT
from exporter.monitoring.generate import rendered_files, scaled_rule_files, write


def main(argv: list[str] | None = None) -> int:
    """Write the generated files into the repository (or, with --test-rules, the shortened rule copy)."""
    parser = argparse.ArgumentParser(prog="python -m exporter.monitoring", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="repository root to write into (default: the current folder)")
    parser.add_argument("--test-rules", type=Path, metavar="DIR",
                        help="write only the shortened test copy of the rules into DIR")
    parser.add_argument("--time-scale", type=float, default=60.0,
                        help="with --test-rules: divide every length of time by this (default 60)")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be greater than 0")
    if args.test_rules is not None:
        changed = write(args.test_rules, scaled_rule_files(DEFAULT, args.time_scale))
    else:
        if not (args.root / "exporter" / "monitoring").is_dir():
            parser.error(f"{args.root} is not the repository root (no exporter/monitoring/ in it)")
        changed = write(args.root, rendered_files(DEFAULT))
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
