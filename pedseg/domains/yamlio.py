"""Strict YAML reading: safe loader only, duplicate keys are errors, errors name file and line.

A descriptor is a small, plain file, and it is read as one: at most :data:`MAX_DESCRIPTOR_BYTES`
(checked before reading), nested at most :data:`MAX_DEPTH` mappings/lists deep (checked while
composing, so a deep file never reaches Python's recursion limit), and without anchors or aliases
(``&name``/``*name``: the "billion laughs" expansion needs them, and no descriptor does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn, cast

import yaml
from yaml.composer import ComposerError
from yaml.error import Mark
from yaml.events import AliasEvent, CollectionStartEvent, Event, NodeEvent

from pedseg.errors import DescriptorError

MAX_DESCRIPTOR_BYTES = 64 * 1024
MAX_DEPTH = 16


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one), anchors,
    aliases and nesting deeper than :data:`MAX_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            _refuse(
                event,
                "anchors and aliases (&name, *name) are not allowed in a descriptor; "
                "write each value out",
            )
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                _refuse(
                    event,
                    f"nested more than {MAX_DEPTH} levels deep; a descriptor needs at most a few",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _refuse(event: Event, problem: str) -> NoReturn:
    raise ComposerError(None, None, problem, cast(Mark, event.start_mark))


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _too_big(size: int) -> str:
    return (
        f"is {size} bytes, more than the {MAX_DESCRIPTOR_BYTES // 1024} KiB a descriptor may "
        "hold; a descriptor is a short YAML file (see domains/*.yaml)"
    )


def load_yaml_text(text: str, *, source: str) -> Any:
    """Parse YAML text strictly; syntax, size, depth, alias and duplicate-key errors become
    :class:`DescriptorError`."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_DESCRIPTOR_BYTES:
        raise DescriptorError(source, [("<file>", _too_big(size))])
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)  # refuses control characters already
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        where = f"character {exc.position + 1}"
        raise DescriptorError(source, [(where, f"{exc.reason} (#x{exc.character:04x})")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<unknown position>"
        raise DescriptorError(source, [(where, str(exc.problem or exc))]) from None
    except yaml.YAMLError as exc:
        raise DescriptorError(source, [("<yaml>", str(exc))]) from None
    except RecursionError:  # a guard above should make this unreachable; never a traceback
        raise DescriptorError(source, [("<yaml>", "is nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_descriptor_text(path: Path) -> str:
    """The text of a descriptor file; refuses a missing, oversized, non-UTF-8 or empty file
    before parsing (a huge file is never read whole)."""
    try:
        size = path.stat().st_size if path.is_file() else -1
    except OSError:
        size = -1
    if size < 0:
        raise DescriptorError(str(path), [("<file>", "does not exist or is not a file")])
    if size > MAX_DESCRIPTOR_BYTES:
        raise DescriptorError(str(path), [("<file>", _too_big(size))])
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_DESCRIPTOR_BYTES + 1)
    except OSError as exc:
        raise DescriptorError(str(path), [("<file>", f"cannot be read ({exc.strerror})")]) from None
    if len(raw) > MAX_DESCRIPTOR_BYTES:  # grew since stat
        raise DescriptorError(str(path), [("<file>", _too_big(len(raw)))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DescriptorError(str(path), [("<file>", "is not UTF-8 text")]) from None
    if not text.strip():
        raise DescriptorError(str(path), [("<file>", "is empty")])
    return text


def load_yaml_file(path: Path) -> Any:
    """Read and strictly parse a YAML file (see :func:`read_descriptor_text`)."""
    return load_yaml_text(read_descriptor_text(path), source=str(path))


def dump_yaml(data: Any) -> str:
    """YAML text of ``data``; long values (paths) stay on one line."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1_000_000)
