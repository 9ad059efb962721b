"""YAML that remembers where each value came from, for errors that name FILE:LINE.

`load(path)` returns the root `Node`: the loaded value with its file, its key path
(`kernels.6.1.variants.thp`) and its line. The config reads a file only through Nodes, so
every error it raises says `FILE:LINE: key.path: problem` with a hint. Strict on purpose:
duplicate keys and non-string keys are errors (PyYAML silently keeps the last duplicate,
and reads an unquoted `6.10` as the float 6.1).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import yaml

from vmtest.errors import ConfigError

_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number",
          str: "a string", list: "a list", dict: "a mapping"}


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember the line of each member."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # id(container) -> (container, {key or index: (key line, value line)})
        self.lines: dict[int, tuple[Any, dict[Any, tuple[int, int]]]] = {}

    def construct_yaml_map(self, node: yaml.MappingNode) -> Generator[dict[Any, Any], None, None]:
        data: dict[Any, Any] = {}
        yield data
        # Keys merged in (`<<: *anchor`) may be overridden by the mapping's own keys;
        # only the mapping's own keys must be unique.
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self.flatten_mapping(node)
        where: dict[Any, tuple[int, int]] = {}
        merged: set[Any] = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise ConfigError(f"{self.name}:{line}: key {key!r} is a "
                                  f"{type(key).__name__} in YAML, not a name",
                                  hint=f"quote it: \"{key_node.value}\"")
            if id(key_node) not in own:
                merged.add(key)
            elif key in where and key in merged:
                merged.discard(key)  # an own key overriding a merged one
            elif key in where:
                raise ConfigError(f"{self.name}:{line}: {key}: duplicate key (first at line "
                                  f"{where[key][0]})", hint="each key once per mapping")
            data[key] = self.construct_object(value_node, deep=True)
            where[key] = (line, value_node.start_mark.line + 1)
        self.lines[id(data)] = (data, where)

    def construct_yaml_seq(self, node: yaml.SequenceNode) -> Generator[list[Any], None, None]:
        data: list[Any] = []
        yield data
        data.extend(self.construct_sequence(node, deep=True))
        lines = {i: (n.start_mark.line + 1,) * 2 for i, n in enumerate(node.value)}
        self.lines[id(data)] = (data, lines)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq)


class Node:
    """One value of a YAML file with its file, key path and line (None: not in the file,
    a default)."""

    def __init__(self, file: Path, value: Any, path: str, line: int | None,
                 lines: dict[int, tuple[Any, dict[Any, tuple[int, int]]]]) -> None:
        self.file = file
        self.value = value
        self.path = path
        self.line = line
        self._lines = lines

    # -- errors --------------------------------------------------------------------
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)

    def error(self, message: str, hint: str | None = None) -> ConfigError:
        key = f" {self.path}:" if self.path else ""
        return ConfigError(f"{self.where()}:{key} {message}", hint=hint)

    # -- structure -----------------------------------------------------------------
    def _child_line(self, key: Any, which: int) -> int | None:
        entry = self._lines.get(id(self.value))
        if entry is None or entry[0] is not self.value or key not in entry[1]:
            return self.line
        return entry[1][key][which]

    def key_line(self, key: str) -> int | None:
        """The line of `key` itself in this mapping."""
        return self._child_line(key, 0)

    def child(self, key: str, default: Any = None) -> Node:
        """The member `key` of this mapping (its default, at this node's line, if absent)."""
        present = isinstance(self.value, dict) and key in self.value
        value = self.value[key] if present else default
        path = f"{self.path}.{key}" if self.path else key
        return Node(self.file, value, path, self._child_line(key, 1) if present else self.line,
                    self._lines)

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def mapping(self, allowed: tuple[str, ...] | set[str] | None = None, *,
                what: str = "a mapping") -> dict[str, Node]:
        """The members of this mapping as Nodes; a key outside `allowed` is an error
        naming the allowed ones."""
        self.expect(dict, what)
        if allowed is not None:
            for key in self.value:
                if key not in allowed:
                    bad = self.child(key)
                    bad.line = self.key_line(key)
                    allowed_here = f"allowed here: {', '.join(sorted(allowed))}"
                    if bad.value is None and any(c.isspace() for c in key):
                        # `{description: a, b c}`: in a flow mapping a comma ends the
                        # value, and the rest is read as a key of its own with no value
                        raise bad.error("unknown key (the rest of a value cut at a comma?)",
                                        hint="inside {...} a comma ends a value: quote a "
                                             "value that has one (description: \"a, b\"); "
                                             + allowed_here)
                    raise bad.error("unknown key", hint=allowed_here)
        return {key: self.child(key) for key in self.value}

    def items(self, what: str = "a list") -> list[Node]:
        self.expect(list, what)
        return [Node(self.file, v, f"{self.path}[{i}]", self._child_line(i, 1), self._lines)
                for i, v in enumerate(self.value)]

    # -- scalars (strict: a bool is no int, a string no bool) ------------------------
    def expect(self, kind: type | tuple[type, ...], what: str | None = None) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(self.value, kinds) and not (
            isinstance(self.value, bool) and bool not in kinds)
        if not ok:
            wanted = what or " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(f"expected {wanted}, got {_describe(self.value)}")
        return self.value

    def text(self, what: str = "a string") -> str:
        return str(self.expect(str, what))

    def flag(self) -> bool:
        return bool(self.expect(bool))

    def integer(self, minimum: int | None = None, what: str = "an integer") -> int:
        value = int(self.expect(int, what))
        if minimum is not None and value < minimum:
            raise self.error(f"must be at least {minimum}, got {value}")
        return value

    def number(self, *, positive: bool = False, what: str = "a number") -> float:
        value = float(self.expect((int, float), what))
        if positive and not value > 0:
            raise self.error(f"must be greater than 0, got {self.value!r}")
        return value

    def strings(self, what: str = "a string or a list of strings") -> list[Node]:
        """A string or a list of strings, as a list of string Nodes."""
        if isinstance(self.value, str):
            return [self]
        nodes = self.items(what)
        for node in nodes:
            node.text(what)
        return nodes


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "mapping"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}" if not isinstance(value, (list, dict)) else kind


def load(path: Path) -> Node:
    """The root Node of the YAML file at path (ConfigError: missing, unreadable, or not
    YAML, with the line)."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    loader = _Loader(text)
    loader.name = str(path)
    try:
        value = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{at}: broken YAML{place}: {getattr(exc, 'problem', None) or exc}",
                          hint="fix the YAML syntax (indentation, colons, quotes)") from exc
    finally:
        loader.dispose()
    return Node(path, value, "", 1, loader.lines)
