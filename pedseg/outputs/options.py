"""Which outputs to write and how: :class:`OutputFormats` (frozen, validated) and its parser.

Precedence: an explicit command-line value, then the domain descriptor's ``outputs:`` section, then
pedseg's defaults (:data:`pedseg.domains.output_names.DEFAULT_FORMATS`, stl, 20 Taubin passes, no
decimation).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pedseg.domains.output_names import (
    DEFAULT_FORMATS,
    DEFAULT_MESH_FORMAT,
    DEFAULT_SMOOTHING,
    FORMATS,
    MAX_SMOOTHING,
    MESH_ALIASES,
    MESH_BASED,
    MESH_FORMATS,
    choices,
    did_you_mean,
)
from pedseg.errors import ConfigError

if TYPE_CHECKING:
    from pedseg.domains.spec import DomainSpec

__all__ = ["MeshOptions", "OutputFormats", "parse_outputs"]


@dataclass(frozen=True)
class MeshOptions:
    """Surface meshes: file format, Taubin smoothing passes, fraction of faces kept."""

    format: str = DEFAULT_MESH_FORMAT
    smoothing: int = DEFAULT_SMOOTHING
    decimate: float = 1.0

    def __post_init__(self) -> None:
        if self.format not in MESH_FORMATS:
            hint = did_you_mean(str(self.format), list(MESH_FORMATS))
            raise ConfigError(
                f"--mesh-format: unknown format {self.format!r}{hint}; "
                f"choose from {', '.join(MESH_FORMATS)}"
            )
        if type(self.smoothing) is not int or not 0 <= self.smoothing <= MAX_SMOOTHING:
            raise ConfigError(
                f"--mesh-smoothing must be an integer in [0, {MAX_SMOOTHING}], "
                f"got {self.smoothing!r}"
            )
        if isinstance(self.decimate, bool) or not 0 < self.decimate <= 1:
            raise ConfigError(
                f"--mesh-decimate must be the fraction of faces kept, in (0, 1], "
                f"got {self.decimate!r}"
            )


@dataclass(frozen=True)
class OutputFormats:
    """The formats to write (canonical names, kept in :data:`FORMATS` order; may be empty) and the
    mesh options."""

    formats: tuple[str, ...] = DEFAULT_FORMATS
    mesh: MeshOptions = field(default_factory=MeshOptions)

    def __post_init__(self) -> None:
        for name in self.formats:
            if name not in FORMATS:
                raise ConfigError(_unknown(name))
        ordered = tuple(f for f in FORMATS if f in self.formats)
        if ordered != self.formats:
            object.__setattr__(self, "formats", ordered)

    def __contains__(self, name: object) -> bool:
        return name in self.formats

    @property
    def needs_meshes(self) -> bool:
        """Whether any format uses the surface meshes (mesh files, statistics, 3D preview)."""
        return any(name in MESH_BASED for name in self.formats)

    def without(self, *names: str) -> OutputFormats:
        """A copy without ``names`` (e.g. ``without("nifti")`` when the caller writes it itself)."""
        return OutputFormats(
            formats=tuple(f for f in self.formats if f not in names), mesh=self.mesh
        )


def _unknown(name: str, option: str = "--outputs") -> str:
    hint = did_you_mean(name, [*FORMATS, *MESH_ALIASES])
    return f"{option}: unknown format {name!r}{hint}; choose from {choices()}"


def _split(outputs: str | Iterable[str]) -> list[str]:
    items = [outputs] if isinstance(outputs, str) else list(outputs)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def parse_outputs(
    outputs: str | Iterable[str] | None = None,
    *,
    mesh_format: str | None = None,
    smoothing: int | None = None,
    decimate: float | None = None,
    spec: DomainSpec | None = None,
    option: str = "--outputs",
) -> OutputFormats:
    """Build :class:`OutputFormats` from ``--outputs nifti,seg-nrrd,mesh-stl,...`` (a string, or
    several), ``--mesh-format``, ``--mesh-smoothing`` and ``--mesh-decimate``; ``None`` takes the
    descriptor's ``outputs:`` default, then pedseg's. Bad values raise a one-line
    :class:`ConfigError` naming the option (``option``: the list's own name), with a
    did-you-mean."""
    defaults = spec.outputs if spec is not None else None
    names: list[str] = []
    alias: str | None = None
    if outputs is None:
        names = list(defaults.formats) if defaults is not None and defaults.formats else []
    else:
        for item in _split(outputs):
            if item in MESH_ALIASES:
                if alias is not None and alias != MESH_ALIASES[item]:
                    raise ConfigError(
                        f"{option}: names two mesh formats (mesh-{alias}, {item}); keep one"
                    )
                alias, item = MESH_ALIASES[item], "mesh"
            if item not in FORMATS:
                raise ConfigError(_unknown(item, option))
            names.append(item)
        if not names:
            raise ConfigError(f"{option}: give at least one format; choose from {choices()}")
    if alias is not None and mesh_format is not None and mesh_format != alias:
        raise ConfigError(
            f"{option} mesh-{alias} conflicts with --mesh-format {mesh_format}; keep one"
        )
    chosen_mesh = mesh_format or alias or (defaults.mesh_format if defaults else None)
    chosen_smoothing = (
        smoothing if smoothing is not None else (defaults.smoothing if defaults else None)
    )
    chosen_decimate = (
        decimate if decimate is not None else (defaults.decimate if defaults else None)
    )
    mesh = MeshOptions(
        format=chosen_mesh or DEFAULT_MESH_FORMAT,
        smoothing=DEFAULT_SMOOTHING if chosen_smoothing is None else chosen_smoothing,
        decimate=1.0 if chosen_decimate is None else chosen_decimate,
    )
    return OutputFormats(formats=tuple(names) or DEFAULT_FORMATS, mesh=mesh)
