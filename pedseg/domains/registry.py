"""The domain and normalization registries.

Sources, in order of precedence (a later one shadows an earlier one of the same name):

1. entry points in the group ``pedseg.domains`` — pedseg's built-ins are registered there exactly like
   a third-party plugin's (each resolves to a callable returning a descriptor path or mapping);
2. the user registry: ``$PEDSEG_HOME/domains/*.yaml``, written by ``pedseg add-domain``.

Normalizations come from the entry-point group ``pedseg.normalizations``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import numpy as np

from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.domains.yamlio import dump_yaml, load_yaml_file
from pedseg.errors import ConfigError, DescriptorError, RegistryError, UnknownNameError
from pedseg.io.atomic import write_text_atomic

DOMAIN_GROUP = "pedseg.domains"
NORMALIZATION_GROUP = "pedseg.normalizations"

NormalizationFn = Callable[[np.ndarray], np.ndarray]


def pedseg_home() -> Path:
    """The user's pedseg folder: ``$PEDSEG_HOME`` or the platform's user data directory."""
    env = os.environ.get("PEDSEG_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("pedseg", appauthor=False))


@cache
def _entry_points(group: str) -> tuple[EntryPoint, ...]:
    return tuple(sorted(entry_points(group=group), key=lambda ep: ep.name))


@cache
def normalizations() -> Mapping[str, NormalizationFn]:
    """Every registered normalization by name."""
    out: dict[str, NormalizationFn] = {}
    for ep in _entry_points(NORMALIZATION_GROUP):
        try:
            fn = ep.load()
        except Exception as exc:  # a broken plugin must not take the tool down
            raise RegistryError(
                f"normalization plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
            ) from exc
        if not callable(fn):
            raise RegistryError(f"normalization plugin {ep.name!r} ({ep.value}) is not callable")
        out[ep.name] = fn
    return out


def get_normalization(name: str) -> NormalizationFn:
    known = normalizations()
    if name not in known:
        raise UnknownNameError("normalization", name, known)
    return known[name]


def load_descriptor(path: str | os.PathLike[str]) -> DomainSpec:
    """Read and validate one descriptor file; a relative ``data.root`` is taken relative to the
    file's folder and made absolute."""
    file = Path(path).expanduser().absolute()
    raw = load_yaml_file(file)
    return parse_descriptor(
        raw, source=str(file), known_normalizations=normalizations(), base_dir=file.parent
    )


@dataclass(frozen=True)
class RegistryEntry:
    """Where a registered domain comes from."""

    name: str
    origin: str  # "built-in", "plugin (dist)", or "user"
    path: Path | None


class DomainRegistry:
    """Domains from entry points and the user's folder."""

    def __init__(self, *, home: Path | None = None) -> None:
        self.home = home if home is not None else pedseg_home()

    @property
    def user_dir(self) -> Path:
        return self.home / "domains"

    def _plugin_entries(self) -> dict[str, tuple[RegistryEntry, Callable[[], DomainSpec]]]:
        out: dict[str, tuple[RegistryEntry, Callable[[], DomainSpec]]] = {}
        for ep in _entry_points(DOMAIN_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            origin = "built-in" if ep.value.startswith("pedseg.") else f"plugin ({dist})"
            out[ep.name] = (RegistryEntry(ep.name, origin, None), partial(_load_entry_point, ep))
        return out

    def _user_files(self) -> dict[str, Path]:
        if not self.user_dir.is_dir():
            return {}
        return {p.stem: p for p in sorted(self.user_dir.glob("*.yaml"))}

    def entries(self) -> list[RegistryEntry]:
        merged: dict[str, RegistryEntry] = {n: e for n, (e, _) in self._plugin_entries().items()}
        for name, path in self._user_files().items():
            merged[name] = RegistryEntry(name, "user", path)
        return [merged[n] for n in sorted(merged)]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def get(self, name: str) -> DomainSpec:
        """The validated descriptor of ``name``; unknown names suggest the closest known ones."""
        user = self._user_files()
        if name in user:
            spec = load_descriptor(user[name])
        else:
            plugins = self._plugin_entries()
            if name not in plugins:
                raise UnknownNameError("domain", name, set(plugins) | set(user))
            spec = plugins[name][1]()
        if spec.name != name:
            raise RegistryError(
                f"{spec.source}: name: registered as {name!r} but the descriptor says {spec.name!r}"
            )
        return spec

    def add(self, path: str | os.PathLike[str], *, force: bool = False) -> DomainSpec:
        """Validate ``path`` and copy it into the user registry."""
        spec = load_descriptor(path)
        existing = {e.name: e for e in self.entries()}
        if spec.name in existing and not force:
            origin = existing[spec.name].origin
            raise RegistryError(
                f"{path}: domain {spec.name!r} is already registered ({origin}); "
                "pass --force to replace it"
            )
        target = self.user_dir / f"{spec.name}.yaml"
        header = f"# registered by pedseg add-domain from {Path(path).name}\n"
        write_text_atomic(target, header + dump_yaml(spec.to_dict()))
        return spec

    def add_or_reuse(
        self, path: str | os.PathLike[str], *, force: bool = False
    ) -> tuple[DomainSpec, bool]:
        """``(spec, registered)``: register ``path`` like :meth:`add`, or reuse the registered
        domain of that name when it is the same task (same content hash; ``registered`` False).
        A *different* domain of that name is refused unless ``force``."""
        candidate = load_descriptor(path)
        if candidate.name in self.names() and not force:
            if self.get(candidate.name).content_hash() != candidate.content_hash():
                raise RegistryError(
                    f"{path}: a different domain {candidate.name!r} is already registered; "
                    "pass --force to replace it"
                )
            return candidate, False
        return self.add(path, force=force), True

    def remove(self, name: str) -> Path:
        """Delete a user-registered domain; built-ins and plugins cannot be removed."""
        user = self._user_files()
        if name in user:
            user[name].unlink()
            return user[name]
        plugins = self._plugin_entries()
        if name in plugins:
            origin = plugins[name][0].origin
            raise RegistryError(
                f"domain {name!r} is {origin} and cannot be removed; uninstall its package instead"
            )
        raise UnknownNameError("domain", name, plugins)

    def resolve(
        self, names: Iterable[str], *, data: Mapping[str, Path] | None = None
    ) -> list[DomainSpec]:
        """Descriptors for ``names`` (in order, no duplicates), with ``--data`` roots applied."""
        data = dict(data or {})
        names = list(names)
        if not names:
            raise ConfigError("no domain given; name at least one (see `pedseg domains list`)")
        seen: set[str] = set()
        specs: list[DomainSpec] = []
        for name in names:
            if name in seen:
                raise ConfigError(f"domain {name!r} is given twice")
            seen.add(name)
            spec = self.get(name)
            if name in data:
                root = data.pop(name)
                spec = spec.with_data_root(root, given_as=data_option(name, root))
            specs.append(spec)
        if data:
            extra = ", ".join(sorted(data))
            raise ConfigError(f"--data names domain(s) not selected in this run: {extra}")
        return specs


def _load_entry_point(ep: EntryPoint) -> DomainSpec:
    try:
        obj: Any = ep.load()
        value = obj() if callable(obj) else obj
    except Exception as exc:
        raise RegistryError(
            f"domain plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
        ) from exc
    if isinstance(value, str | os.PathLike):
        return load_descriptor(value)
    if isinstance(value, Mapping):
        return parse_descriptor(
            value, source=f"entry point {ep.value}", known_normalizations=normalizations()
        )
    raise RegistryError(
        f"domain plugin {ep.name!r} ({ep.value}) must give a descriptor path or mapping, "
        f"got {type(value).__name__}"
    )


def data_option(name: str, root: Path) -> str:
    """``--data NAME=DIR`` as the user gave it, for messages."""
    return f"--data {name}={root}"


def parse_data_overrides(values: Iterable[str]) -> dict[str, Path]:
    """Parse repeated ``--data NAME=DIR`` options."""
    out: dict[str, Path] = {}
    for item in values:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--data must look like NAME=DIR, got {item!r}")
        if name in out:
            raise ConfigError(f"--data gives domain {name!r} twice")
        out[name] = Path(folder).expanduser()
    return out


__all__ = [
    "DescriptorError",
    "DomainRegistry",
    "RegistryEntry",
    "data_option",
    "get_normalization",
    "load_descriptor",
    "normalizations",
    "parse_data_overrides",
    "pedseg_home",
]
