"""Cost of matching a hostile rule pattern against file names: Python's backtracking `re` (what
rules used before) against RE2 (what they use now).

`(a+)+$` searched in `aaaa...a!.mp4` backtracks exponentially in `re`: every extra `a` doubles
the time. RE2 matches in time linear in the name. The `re` column stops once one search takes
longer than `--re-limit` seconds (it would only get worse).

    .venv/bin/python bench/bench_rule_patterns.py
    .venv/bin/python bench/bench_rule_patterns.py --quick
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable

from bulletproof.patterns import compile_rule_regex, glob_to_regex

HOSTILE = [
    ("regex", r"(a+)+$", lambda n: "a" * n + "!.mp4"),
    ("regex", r"(a|aa)+$", lambda n: "a" * n + "!.mp4"),
    ("glob", "*a*a*a*a*a*a*a*a*a*a*b", lambda n: "a" * n + ".mp4"),
]


def seconds(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_python_re(pattern: re.Pattern[str], name: str, limit: float) -> tuple[float | None, bool]:
    """(seconds, found) of one `re` search, in a child process killed after `limit` seconds
    (a backtracking search cannot be interrupted from inside); (None, False) past the limit."""
    code = ("import re, sys, time; p = re.compile(sys.argv[1], int(sys.argv[2])); t = time.perf_counter(); "
            "found = p.search(sys.argv[3]) is not None; print(time.perf_counter() - t, int(found))")
    try:
        done = subprocess.run([sys.executable, "-c", code, pattern.pattern, str(pattern.flags), name],
                              capture_output=True, text=True, timeout=limit, check=True)
    except subprocess.TimeoutExpired:
        return None, False
    took, found = done.stdout.split()
    return float(took), found == "1"


def python_re(kind: str, pattern: str) -> re.Pattern[str]:
    if kind == "regex":
        return re.compile(pattern)
    # The translation the rules used before RE2 (same as glob_to_regex's, compiled by `re`).
    body = glob_to_regex(pattern).pattern.removeprefix("(?s)").removesuffix(r"\z")
    return re.compile(body + r"\Z", re.DOTALL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 20, 22, 24, 26, 27, 30, 255])
    parser.add_argument("--re-limit", type=float, default=5.0, help="stop timing `re` past this many s")
    parser.add_argument("--quick", action="store_true", help="short names only")
    args = parser.parse_args()
    lengths = [16, 20, 22, 255] if args.quick else args.lengths
    rows = []
    for kind, pattern, name_for in HOSTILE:
        slow = python_re(kind, pattern)
        fast = compile_rule_regex(pattern) if kind == "regex" else glob_to_regex(pattern)
        gave_up = False
        for n in lengths:
            name = name_for(n)
            re2_found = fast.search(name) is not None
            re2_s = seconds(lambda f=fast, t=name: f.search(t), repeat=5)
            if gave_up:
                re_s, same = "skipped", "n/a"
            else:
                took, re_found = time_python_re(slow, name, args.re_limit)
                if took is None:
                    re_s, same, gave_up = f"> {args.re_limit:g}", "n/a", True
                else:
                    re_s, same = f"{took:.4f}", "yes" if re_found == re2_found else "NO"
            rows.append((kind, pattern, n, re_s, f"{re2_s * 1e6:.1f}", same))
    print(f"{'kind':6} {'pattern':26} {'name len':>8} {'re s':>10} {'RE2 us':>9} {'same answer':>11}")
    for kind, pattern, n, re_s, re2_us, same in rows:
        print(f"{kind:6} {pattern:26} {n:8d} {re_s:>10} {re2_us:>9} {same:>11}")


if __name__ == "__main__":
    main()
