"""The optional ``outputs:`` section of a domain descriptor: per-domain defaults of the clinical
outputs (:mod:`pedseg.outputs`) and optional coded anatomy per label for DICOM-SEG and Slicer.

```yaml
outputs:
  formats: [nifti, seg-nrrd, mesh-stl, stats]   # default of --outputs
  mesh_format: stl                              # stl | ply | obj
  smoothing: 20                                 # Taubin passes, 0 = none
  decimate: 0.5                                 # fraction of mesh faces kept, 1 = all
  codes:                                        # per label name, optional
    femur: {scheme: SCT, value: "71341001", meaning: Femur}
```

Every key is optional; an absent key means pedseg's default. The section is presentation, not task:
it is kept out of :meth:`DomainSpec.content_hash`, so adding or editing it never invalidates trained
runs, and descriptors without it hash exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pedseg.domains.output_names import (
    FORMATS,
    MAX_SMOOTHING,
    MESH_ALIASES,
    MESH_FORMATS,
    choices,
    did_you_mean,
)

_KEYS = {"formats", "mesh_format", "smoothing", "decimate", "codes"}
_CODE_KEYS = {"scheme", "value", "meaning"}
_SCHEME = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,15}$")
Problems = list[tuple[str, str]]


@dataclass(frozen=True)
class LabelCode:
    """A coded concept (DICOM Code Sequence item) naming a label's anatomy, e.g. SCT 71341001."""

    value: str
    meaning: str
    scheme: str = "SCT"

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}


@dataclass(frozen=True)
class OutputsSpec:
    """Validated ``outputs:`` section (``None`` fields: not set, pedseg's default applies)."""

    formats: tuple[str, ...] | None = None
    mesh_format: str | None = None
    smoothing: int | None = None
    decimate: float | None = None
    codes: tuple[tuple[str, LabelCode], ...] = ()

    def code_for(self, label: str) -> LabelCode | None:
        return dict(self.codes).get(label)

    def to_dict(self) -> dict[str, Any]:
        """Only the keys that were set, so that parsing the result gives an equal spec."""
        out: dict[str, Any] = {}
        if self.formats is not None:
            out["formats"] = list(self.formats)
        if self.mesh_format is not None:
            out["mesh_format"] = self.mesh_format
        if self.smoothing is not None:
            out["smoothing"] = self.smoothing
        if self.decimate is not None:
            out["decimate"] = self.decimate
        if self.codes:
            out["codes"] = {name: code.to_dict() for name, code in self.codes}
        return out


def _tname(value: object) -> str:
    return "null" if value is None else type(value).__name__


def parse_outputs_section(
    value: Any, label_names: Sequence[str], problems: Problems
) -> OutputsSpec | None:
    """Validate the ``outputs`` mapping; problems are appended as ``(field, message)``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append(("outputs", f"must be a mapping, got {_tname(value)}"))
        return None
    for key in value:
        if key not in _KEYS:
            hint = did_you_mean(str(key), sorted(_KEYS)) or f"; allowed: {', '.join(sorted(_KEYS))}"
            problems.append((f"outputs.{key}", f"unknown key{hint}"))
    formats, alias_mesh = _formats(value.get("formats"), problems)
    mesh_format = _mesh_format(value.get("mesh_format"), alias_mesh, problems)
    return OutputsSpec(
        formats=formats,
        mesh_format=mesh_format,
        smoothing=_smoothing(value.get("smoothing"), problems),
        decimate=_decimate(value.get("decimate"), problems),
        codes=_codes(value.get("codes"), label_names, problems),
    )


def _formats(value: Any, problems: Problems) -> tuple[tuple[str, ...] | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, list) or not value:
        problems.append(("outputs.formats", f"must be a non-empty list, got {_tname(value)}"))
        return None, None
    names: list[str] = []
    mesh: str | None = None
    for item in value:
        if not isinstance(item, str) or (item not in FORMATS and item not in MESH_ALIASES):
            hint = did_you_mean(str(item), [*FORMATS, *MESH_ALIASES])
            problems.append(
                ("outputs.formats", f"unknown format {item!r}{hint}; choose from {choices()}")
            )
            continue
        if item in MESH_ALIASES:
            if mesh is not None and mesh != MESH_ALIASES[item]:
                problems.append(("outputs.formats", f"names two mesh formats ({mesh}, {item})"))
            mesh, item = MESH_ALIASES[item], "mesh"
        if item not in names:
            names.append(item)
    return tuple(f for f in FORMATS if f in names), mesh


def _mesh_format(value: Any, alias: str | None, problems: Problems) -> str | None:
    if value is None:
        return alias
    if value not in MESH_FORMATS:
        hint = did_you_mean(str(value), list(MESH_FORMATS))
        problems.append(
            (
                "outputs.mesh_format",
                f"must be one of {', '.join(MESH_FORMATS)}, got {value!r}{hint}",
            )
        )
        return alias
    if alias is not None and alias != value:
        problems.append(
            ("outputs.mesh_format", f"is {value!r} but outputs.formats names mesh-{alias}")
        )
    return str(value)


def _smoothing(value: Any, problems: Problems) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_SMOOTHING:
        problems.append(
            ("outputs.smoothing", f"must be an integer in [0, {MAX_SMOOTHING}], got {value!r}")
        )
        return None
    return value


def _decimate(value: Any, problems: Problems) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        problems.append(
            ("outputs.decimate", f"must be a fraction of faces kept in (0, 1], got {value!r}")
        )
        return None
    return float(value)


def _codes(
    value: Any, label_names: Sequence[str], problems: Problems
) -> tuple[tuple[str, LabelCode], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        problems.append(("outputs.codes", f"must map label names to codes, got {_tname(value)}"))
        return ()
    out: list[tuple[str, LabelCode]] = []
    for name, entry in value.items():
        where = f"outputs.codes.{name}"
        if name not in label_names:
            hint = did_you_mean(str(name), list(label_names))
            problems.append((where, f"is not a label of this domain{hint}"))
            continue
        code = _code(entry, where, problems)
        if code is not None:
            out.append((str(name), code))
    order = {name: i for i, name in enumerate(label_names)}
    return tuple(sorted(out, key=lambda item: order[item[0]]))


def _code(entry: Any, where: str, problems: Problems) -> LabelCode | None:
    if not isinstance(entry, Mapping):
        problems.append((where, f"must be a mapping with value and meaning, got {_tname(entry)}"))
        return None
    ok = True
    for key in entry:
        if key not in _CODE_KEYS:
            problems.append(
                (f"{where}.{key}", f"unknown key{did_you_mean(str(key), sorted(_CODE_KEYS))}")
            )
            ok = False
    scheme = entry.get("scheme", "SCT")
    code_value = entry.get("value")
    meaning = entry.get("meaning")
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        problems.append((f"{where}.scheme", f"must be a coding scheme such as SCT, got {scheme!r}"))
        ok = False
    if (
        not isinstance(code_value, str)
        or not 0 < len(code_value) <= 16
        or code_value != code_value.strip()
    ):
        problems.append(
            (f"{where}.value", f"must be a code of 1-16 characters (quote it), got {code_value!r}")
        )
        ok = False
    if not isinstance(meaning, str) or not 0 < len(meaning.strip()) <= 64 or "\\" in meaning:
        problems.append((f"{where}.meaning", f"must be a text of 1-64 characters, got {meaning!r}"))
        ok = False
    if not ok:
        return None
    return LabelCode(value=str(code_value), meaning=str(meaning).strip(), scheme=str(scheme))
