"""Strict reading of the planner's JSON files: exact keys, exact types, one-line errors.

A :class:`Reader` wraps one JSON object and knows where it is (``plan.json: image_size``); every
accessor checks the value's type and range and raises :class:`PlanError` naming the file and the
field. :meth:`Reader.check_keys` refuses unknown and missing keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, NoReturn

from pedseg.errors import PlanError

__all__ = ["Reader", "load_json_object"]


def load_json_object(path: Path, *, what: str) -> Reader:
    """Read ``path`` as one JSON object; unreadable or malformed files raise :class:`PlanError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); rewrite the {what}"
        ) from None
    return Reader(raw, source=str(path))


class Reader:
    """One JSON object at ``source`` (a file), ``path`` inside it."""

    def __init__(self, raw: Any, *, source: str, path: str = "") -> None:
        self.source, self.path = source, path
        if not isinstance(raw, Mapping):
            self.fail(f"must be a JSON object, got {_kind(raw)}")
        self.raw: Mapping[str, Any] = raw

    def where(self, name: str | None = None) -> str:
        inner = ".".join(p for p in (self.path, name) if p)
        return f"{self.source}: {inner}" if inner else self.source

    def fail(self, message: str, name: str | None = None) -> NoReturn:
        raise PlanError(f"{self.where(name)} {message}")

    def check_keys(self, keys: Collection[str]) -> None:
        extra = sorted(set(self.raw) - set(keys))
        if extra:
            self.fail(f"has unknown key {extra[0]!r}; allowed: {', '.join(sorted(keys))}")
        missing = [k for k in keys if k not in self.raw]
        if missing:
            self.fail(f"misses key {missing[0]!r}")

    def value(self, name: str) -> Any:
        if name not in self.raw:
            self.fail(f"misses key {name!r}")
        return self.raw[name]

    def integer(self, name: str, *, low: int | None = None) -> int:
        value = self.value(name)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"must be an integer, got {_show(value)}", name)
        if low is not None and value < low:
            self.fail(f"must be >= {low}, got {value}", name)
        return int(value)

    def number(self, name: str, *, low: float | None = None, high: float | None = None) -> float:
        return _number(self, name, self.value(name), low=low, high=high)

    def text(self, name: str, *, choices: Collection[str] | None = None) -> str:
        value = self.value(name)
        if not isinstance(value, str):
            self.fail(f"must be a string, got {_show(value)}", name)
        if choices is not None and value not in choices:
            self.fail(f"must be one of {', '.join(sorted(choices))}, got {value!r}", name)
        return str(value)

    def flag(self, name: str) -> bool:
        value = self.value(name)
        if not isinstance(value, bool):
            self.fail(f"must be true or false, got {_show(value)}", name)
        return bool(value)

    def items(self, name: str) -> list[Any]:
        value = self.value(name)
        if not isinstance(value, list):
            self.fail(f"must be a list, got {_show(value)}", name)
        return list(value)

    def numbers(
        self, name: str, *, length: int | None = None, low: float | None = None
    ) -> tuple[float, ...]:
        values = self.items(name)
        if length is not None and len(values) != length:
            self.fail(f"must hold {length} numbers, got {len(values)}", name)
        return tuple(_number(self, f"{name}[{i}]", v, low=low) for i, v in enumerate(values))

    def integers(self, name: str, *, low: int | None = None) -> tuple[int, ...]:
        values = self.items(name)
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
                bound = f" >= {low}" if low is not None else ""
                self.fail(f"must hold integers{bound}, got {_show(v)} at {i}", name)
        return tuple(int(v) for v in values)

    def child(self, name: str) -> Reader:
        return Reader(self.value(name), source=self.source, path=_join(self.path, name))

    def children(self, name: str) -> list[Reader]:
        return [
            Reader(v, source=self.source, path=f"{_join(self.path, name)}[{i}]")
            for i, v in enumerate(self.items(name))
        ]


def _number(
    reader: Reader, name: str, value: Any, *, low: float | None = None, high: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        reader.fail(f"must be a finite number, got {_show(value)}", name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else high}]"
        reader.fail(f"must be in {bounds}, got {value!r}", name)
    return float(value)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
