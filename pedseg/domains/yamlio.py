"""Strict YAML reading: safe loader only, duplicate keys are errors, errors name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pedseg.errors import DescriptorError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


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


def load_yaml_text(text: str, *, source: str) -> Any:
    """Parse YAML text strictly; syntax and duplicate-key errors become :class:`DescriptorError`."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<unknown position>"
        raise DescriptorError(source, [(where, str(exc.problem or exc))]) from None
    except yaml.YAMLError as exc:
        raise DescriptorError(source, [("<yaml>", str(exc))]) from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """Read and strictly parse a YAML file."""
    if not path.is_file():
        raise DescriptorError(str(path), [("<file>", "does not exist or is not a file")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DescriptorError(str(path), [("<file>", "is not UTF-8 text")]) from None
    if not text.strip():
        raise DescriptorError(str(path), [("<file>", "is empty")])
    return load_yaml_text(text, source=str(path))


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
