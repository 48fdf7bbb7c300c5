"""Rule matching: which rule and profile a file gets, first match wins."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bulletproof.config import Config, Rule
from bulletproof.profiles import Profile


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: `*` and `?` stay inside one folder, `**` crosses folders."""
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
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_matches(pattern: str, rel_path: str) -> bool:
    """True when `rel_path` matches; a pattern without `/` is matched against the base name."""
    target = rel_path if "/" in pattern else rel_path.rsplit("/", 1)[-1]
    return glob_to_regex(pattern).match(target) is not None


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The rule a file matched, by name and index, and the profile it names."""

    rule_name: str
    rule_index: int
    profile_name: str
    profile: Profile
    priority: int


def rule_display_name(rule: Rule, index: int) -> str:
    """A rule's name, or `rule-<index>` when it has none."""
    return rule.name or f"rule-{index}"


def rule_applies(rule: Rule, rel_path: str, size: int | None) -> bool:
    """True when every condition the rule gives holds for this file."""
    if rule.extensions is not None:
        ext = rel_path.rsplit(".", 1)[-1].lower() if "." in rel_path.rsplit("/", 1)[-1] else ""
        if ext not in rule.extensions:
            return False
    if rule.glob is not None and not any(glob_matches(g, rel_path) for g in rule.glob):
        return False
    if rule.regex is not None and re.search(rule.regex, rel_path) is None:
        return False
    if size is not None:
        if rule.min_size is not None and size < rule.min_size:
            return False
        if rule.max_size is not None and size > rule.max_size:
            return False
    return True


class RuleMatcher:
    """Applies a config's ordered rules to relative paths."""

    def __init__(self, config: Config) -> None:
        self._rules = list(config.rules)
        self._profiles = config.all_profiles()

    def match(self, rel_path: str, size: int | None = None) -> RuleMatch | None:
        """The first matching rule, or None; `size` None skips the size conditions."""
        for index, rule in enumerate(self._rules):
            if rule_applies(rule, rel_path, size):
                return RuleMatch(
                    rule_name=rule_display_name(rule, index),
                    rule_index=index,
                    profile_name=rule.profile,
                    profile=self._profiles[rule.profile],
                    priority=rule.priority,
                )
        return None
