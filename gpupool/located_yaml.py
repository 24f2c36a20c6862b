"""The one YAML reader: composed nodes that know their line, under safe rules.

Policy documents, scenarios, programme files and YAML batch files are all
*composed* here (``compose`` / ``load``), never loaded, so each reader walks
nodes whose ``start_mark`` gives the line for its own ``file:line field``
errors (``where``). While composing, the loader refuses, each with a
:class:`gpupool.files.FileError` at ``file:line field.path``:

- anchors and aliases (``&a``, ``*a``): none of our formats needs them, and an
  alias bomb of a few hundred bytes expands to gigabytes;
- merge keys (``<<:``): write the fields out;
- a key given twice in one mapping (the message names both lines), and keys
  that are lists or mappings;
- nesting deeper than ``MAX_DEPTH``, checked on the way down, so a deeply
  nested file is an error, never a RecursionError;
- tags other than the plain ones (str, int, float, bool, null, timestamp,
  seq, map), e.g. ``!!binary``, ``!!set`` or ``!!python/...``;
- a scalar whose tag it cannot be read as (``2026-02-30``, a 5,000-digit
  integer), so constructing a composed node never fails later.

``to_python`` turns a composed node into plain values; ``entries`` turns a
section of declarations (programmes, vouchers) into plain mappings that still
know the line of each field (``LocatedEntry``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor

from gpupool.files import FileError, FileKind, LocatedEntry, read_text

MAX_DEPTH = 32  # levels of mappings and lists; our formats use fewer than 10

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_CHECKED_TAGS = {  # tag -> what its scalars must be
    _TAG + "int": "integer",
    _TAG + "float": "number",
    _TAG + "bool": "boolean",
    _TAG + "null": "null",
    _TAG + "timestamp": "date or time",
}
_ALLOWED_TAGS = frozenset({*_CHECKED_TAGS, _TAG + "str", _TAG + "seq", _TAG + "map"})
_KEY_SHOWN = 60  # characters of a key shown in an error's field path


def load(path: str | Path, kind: FileKind, source: str | None = None) -> yaml.Node | None:
    """The file's root node (None when it holds no document); ``source`` names it in errors."""
    source = str(path) if source is None else source
    return compose(read_text(path, kind, source), source, kind)


def compose(text: str, source: str, kind: FileKind | None = None) -> yaml.Node | None:
    """The root node of YAML ``text`` (None when empty); errors are located at ``source``."""
    if kind is not None and len(text) > kind.max_bytes:
        raise FileError(
            f"too large: {len(text):,} characters; a {kind.noun} may have at most "
            f"{kind.max_bytes:,}",
            location=source,
        )
    try:
        return _compose(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "cannot parse"
        raise FileError(f"invalid YAML: {problem}", location=f"{source}{line}") from None
    except yaml.reader.ReaderError as exc:  # a control character: unmarked, has a position
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise FileError(message, location=f"{source}:{line}") from None
    except yaml.YAMLError as exc:
        raise FileError(f"invalid YAML: {exc}", location=source) from None


def _compose(text: str, source: str) -> yaml.Node | None:
    loader = _Loader(text, source)  # checks the characters first: may raise ReaderError
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def where(source: str, node: yaml.Node, path: str = "") -> str:
    """``file:line field.path`` for an error about ``node``."""
    return f"{source}:{node.start_mark.line + 1} {path}".rstrip()


def to_python(node: yaml.Node) -> Any:
    """The plain value of a node ``compose`` returned (dicts, lists, scalars)."""
    return SafeConstructor().construct_object(node, deep=True)


def entries(node: yaml.Node, source: str, path: str) -> list[LocatedEntry]:
    """The entries of a section: a list of mappings, or a mapping from name to mapping
    (the key fills in ``name``); none for null. Anything else is a FileError there."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null":
        return []
    if isinstance(node, yaml.SequenceNode):
        items = [(None, item, join(path, index)) for index, item in enumerate(node.value)]
    elif isinstance(node, yaml.MappingNode):
        items = [(key.value, item, join(path, key.value)) for key, item in node.value]
    else:
        section = path.rsplit(".", 1)[-1] or "entries"
        raise FileError(f"expected a list of {section}", location=where(source, node, path))
    return [_entry(name, item, source, item_path) for name, item, item_path in items]


def _entry(name: str | None, node: yaml.Node, source: str, path: str) -> LocatedEntry:
    if not isinstance(node, yaml.MappingNode):
        raise FileError("expected a mapping of fields", location=where(source, node, path))
    entry = LocatedEntry({key.value: to_python(value) for key, value in node.value})
    if name is not None:
        entry.setdefault("name", name)
    entry.location = where(source, node, path)
    entry.key_locations = {
        key.value: where(source, key, join(path, key.value)) for key, _ in node.value
    }
    return entry


def join(path: str, key: object) -> str:
    """A child's field path: ``a.b`` for a key, ``a[0]`` for an index."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if len(text) > _KEY_SHOWN:
        text = text[:_KEY_SHOWN] + "..."
    return f"{path}.{text}" if path else text


class _Loader(yaml.SafeLoader):
    """SafeLoader's composer with the checks above; it tracks each node's field path."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self._paths = [""]  # field path of each node being composed, outermost first

    def _refuse(self, mark, path: str, message: str) -> NoReturn:
        raise FileError(message, location=f"{self.source}:{mark.line + 1} {path}".rstrip())

    def compose_node(self, parent, index):
        event = self.peek_event()
        path = self._child_path(parent, index)
        name = (event.anchor or "")[:_KEY_SHOWN]
        if isinstance(event, yaml.AliasEvent):
            message = f"aliases (*{name}) are not allowed; write the value out"
            self._refuse(event.start_mark, path, message)
        if event.anchor is not None:
            message = f"anchors (&{name}) are not allowed; write the value out where it is used"
            self._refuse(event.start_mark, path, message)
        if len(self._paths) > MAX_DEPTH:
            self._refuse(event.start_mark, path, f"nested deeper than {MAX_DEPTH} levels")
        self._paths.append(path)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._paths.pop()
        self._check_node(node, path)
        return node

    def _child_path(self, parent, index) -> str:
        if parent is None or index is None:  # the root, or a key: its mapping's path
            return self._paths[-1]
        if isinstance(index, int):
            return join(self._paths[-1], index)
        return join(self._paths[-1], index.value if isinstance(index, yaml.ScalarNode) else "?")

    def _check_node(self, node, path: str) -> None:
        if node.tag == _MERGE:
            return  # refused as a key, where it means something
        if node.tag not in _ALLOWED_TAGS:
            tag = node.tag.replace(_TAG, "!!", 1) if node.tag.startswith(_TAG) else node.tag
            self._refuse(node.start_mark, path, f"the tag {tag[:_KEY_SHOWN]!r} is not allowed")
        if node.tag in _CHECKED_TAGS:
            try:
                self.construct_object(node)
            except (ValueError, OverflowError, yaml.YAMLError):
                kind = _CHECKED_TAGS[node.tag]
                shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
                self._refuse(node.start_mark, path, f"not a valid {kind}: {shown!r}")

    def compose_mapping_node(self, anchor):
        # SafeLoader's own, plus the key checks between composing a key and its value
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.MappingNode, None, start.implicit)
        node = yaml.MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        first_lines: dict[tuple[str, Any], int] = {}
        while not self.check_event(yaml.MappingEndEvent):
            key = self.compose_node(node, None)
            self._check_key(key, first_lines)
            node.value.append((key, self.compose_node(node, key)))
        node.end_mark = self.get_event().end_mark
        return node

    def _check_key(self, key, first_lines: dict[tuple[str, Any], int]) -> None:
        path = self._paths[-1]
        if key.tag == _MERGE:
            self._refuse(
                key.start_mark, path, "merge keys (<<) are not allowed; write the fields out"
            )
        if not isinstance(key, yaml.ScalarNode):
            self._refuse(key.start_mark, path, "a key must be a single value, not a list or map")
        # `1` and "1" are one key to readers that go by the text, `1` and `1.0` to a dict
        identities = [("text", key.value)]
        value = self.construct_object(key)
        if not isinstance(value, str):
            identities.append(("value", value))
        line = key.start_mark.line + 1
        for identity in identities:
            if identity in first_lines:
                self._refuse(
                    key.start_mark,
                    join(path, key.value),
                    f"duplicate key (first at line {first_lines[identity]}, again at line {line})",
                )
        for identity in identities:
            first_lines[identity] = line


# ---------------------------------------------------------------------------
# Overrides: a value set inside a composed document before a reader walks it
# ---------------------------------------------------------------------------


Overrides = tuple[tuple[str, Any], ...]  # (field path, plain value), applied in order


def apply_overrides(root: yaml.Node | None, overrides: Overrides, source: str) -> None:
    """``override`` each (path, value) of ``overrides``; a path that cannot be followed
    is a FileError at ``source path``."""
    for path, value in overrides:
        try:
            if root is None:
                raise ValueError("the document is empty")
            override(root, split_path(path), value)
        except ValueError as exc:
            raise FileError(f"cannot set {path}: {exc}", location=f"{source} {path}") from None


def split_path(path: str) -> list[str | int]:
    """``subsidy.domain_rates.medical`` -> keys; ``programmes[0].rate`` -> an index too."""
    keys: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if not name:
            raise ValueError(f"empty key in {path!r}")
        keys.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            if not index.isdigit() or (rest and not rest.startswith("[")):
                raise ValueError(f"bad index in {path!r}: write name[0].field")
            keys.append(int(index))
            rest = rest[1:]
    return keys


def override(root: yaml.Node, keys: list[str | int], value: Any) -> None:
    """Set the value at ``keys`` inside ``root`` to ``value`` (plain data), in place.

    Missing mapping keys (and a null on the way) become mappings; in a list, an
    integer is an index and a name selects the entry whose ``name`` is that name
    (``programmes.health-edu.rate``). The new nodes carry the marks of the node they
    replace (or of their mapping), so a reader's error still names a line of the
    document. A path that cannot be followed raises ValueError.
    """
    node = root
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, yaml.MappingNode) and isinstance(key, str):
            node = _mapping_child(node, key, value, last)
        elif isinstance(node, yaml.SequenceNode):
            node = _sequence_child(node, key, value, last)
        else:
            shown = ".".join(map(str, keys[:depth])) or "the document"
            if isinstance(node, yaml.MappingNode):
                raise ValueError(f"{shown} is a mapping: name a key, not [{key}]")
            raise ValueError(f"{shown} is a single value: cannot follow {key!r} in it")


def _mapping_child(node: yaml.MappingNode, key: str, value: Any, last: bool) -> yaml.Node:
    """The child at ``key`` (set to ``value`` when ``last``); a missing or null one on
    the way becomes an empty mapping."""
    for index, (key_node, child) in enumerate(node.value):
        if key_node.value == key:
            if last or _is_null(child):
                child = _value_node(value if last else {}, child.start_mark)
                node.value[index] = (key_node, child)
            return child
    key_node = yaml.ScalarNode(_TAG + "str", key, node.start_mark, node.start_mark)
    child = _value_node(value if last else {}, node.start_mark)
    node.value.append((key_node, child))
    return child


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null"


def _sequence_child(node: yaml.SequenceNode, key: str | int, value: Any, last: bool):
    if isinstance(key, int):
        if key >= len(node.value):
            raise ValueError(f"index {key} is past the end of a list of {len(node.value)}")
        index = key
    else:
        named = [i for i, item in enumerate(node.value) if _entry_name(item) == key]
        if not named:
            raise ValueError(f"no entry named {key!r} in the list")
        index = named[0]
    if last:
        node.value[index] = _value_node(value, node.value[index].start_mark)
    return node.value[index]


def _entry_name(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, child in node.value:
            if key_node.value == "name" and isinstance(child, yaml.ScalarNode):
                return child.value
    return None


def _value_node(value: Any, mark) -> yaml.Node:
    node = yaml.representer.SafeRepresenter().represent_data(value)
    _stamp(node, mark)
    return node


def _stamp(node: yaml.Node, mark) -> None:
    node.start_mark = node.end_mark = mark
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _stamp(item, mark)
    elif isinstance(node, yaml.MappingNode):
        for key, item in node.value:
            _stamp(key, mark)
            _stamp(item, mark)
