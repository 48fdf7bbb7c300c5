"""Rule matching: which rule and profile a file gets, first match wins."""

from __future__ import annotations

from dataclasses import dataclass

from bulletproof.config import Config, Rule
from bulletproof.patterns import compile_rule_regex, glob_to_regex
from bulletproof.profiles import Profile


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
    if rule.regex is not None and compile_rule_regex(rule.regex).search(rel_path) is None:
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
