"""Loading YAML whose aliases cannot expand past a limit ("billion laughs" documents are refused)."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# A monitor.yaml has a few hundred values; this leaves room for big rule lists and still stops a
# document whose aliases would expand to millions of values before anything is built from it.
MAX_NODES = 100_000


class YamlTooLarge(yaml.MarkedYAMLError):
    """The document's aliases expand past the node limit, or refer to themselves."""


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that sizes each composed document as if every alias were expanded."""

    max_nodes = MAX_NODES

    def compose_document(self) -> Node | None:
        """Compose as usual, then refuse a document that expands past `max_nodes`."""
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node, self.max_nodes)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping, refusing a key given twice (YAML would keep the last one silently)."""
        seen: dict[Any, Node] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` keys may be overridden: that is what they are for
            key = self.construct_object(key_node)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first on line {first})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root: Node, limit: int) -> None:
    # An alias is the same node object reached twice: sizes are memoised per node, so this walk
    # costs one visit per distinct node however far the aliases would expand.
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise YamlTooLarge(None, None, "an alias refers to the node that contains it",
                               node.start_mark)
        in_progress.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise YamlTooLarge(None, None, f"aliases expand to more than {limit} values; "
                                               "refusing the document", child.start_mark)
        in_progress.discard(key)
        sizes[key] = total
        return total

    size(root)


def load_yaml(text: str, *, max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document safely; raises yaml.YAMLError (YamlTooLarge past `max_nodes`)."""
    loader = _LimitedLoader(text)
    loader.max_nodes = max_nodes
    try:
        return loader.get_single_data()
    except RecursionError:  # the parser and composer recurse once per nesting level
        raise YamlTooLarge(None, None, "values are nested too deeply; refusing the document",
                           None) from None
    finally:
        loader.dispose()
