"""Pattern compilation for rules: globs and regexes, both compiled with RE2 (linear-time matching)."""

from __future__ import annotations

import re
from functools import lru_cache

import re2

PATTERN_MAX = 1000  # characters of a rule regex or glob; RE2 also caps the compiled program's memory (8 MiB)


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the error is reported with its key path; no stray stderr lines
    return options


_RE2_OPTIONS = _re2_options()


def _compile(regex: str, what: str) -> re2._Regexp:
    try:
        return re2.compile(regex, _RE2_OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else exc
        reason = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        hint = ""
        if "perl operator" in reason or "escape sequence" in reason:
            hint = " (RE2 syntax: lookarounds and backreferences are not supported)"
        raise ValueError(f"invalid {what}: {reason}{hint}") from None


@lru_cache(maxsize=256)
def compile_rule_regex(pattern: str) -> re2._Regexp:
    """Compile a rule regex with RE2 (linear-time matching); ValueError says why it cannot."""
    if len(pattern) > PATTERN_MAX:
        raise ValueError(f"longer than {PATTERN_MAX} characters")
    return _compile(pattern, "regular expression")


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re2._Regexp:
    """Compile a path glob: `*` and `?` stay inside one folder, `**` crosses folders."""
    if len(pattern) > PATTERN_MAX:
        raise ValueError(f"longer than {PATTERN_MAX} characters")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    # RE2, like rule regexes: `*a*a*a...` against a long name must not backtrack for seconds.
    return _compile("(?s)" + "".join(out) + r"\z", "glob")
