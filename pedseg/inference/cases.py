"""Planning a prediction: inputs -> cases -> every output file, checked before any work.

Layout. With a folder ``OUT`` (several inputs, a folder input, or ``--out`` without a volume
suffix) every case writes ``OUT/<case>.nii.gz``, ``OUT/<case>.json`` and, when asked,
``OUT/<case>_probabilities.nii.gz`` and ``OUT/<case>_preview.png``; ``OUT/pedseg-predict.json``
(the manifest, :mod:`pedseg.inference.manifest`) records each case. A single input file may instead
name its label map (``--out seg.nii.gz``): the other files sit beside it (``seg.json``, ...) and no
manifest is written.

Inputs are checked before anything runs: every output must lie outside the input folders and no two
inputs may map to one case name. The plan is made once per command and handed on: the cases of all
domains share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, OutputError, PedsegError, VolumeError
from pedseg.io import is_volume_path
from pedseg.io.readers import volume_suffix
from pedseg.io.writers import OUTPUT_SUFFIXES
from pedseg.outputs.options import OutputFormats, parse_outputs
from pedseg.outputs.plan import plan_case_outputs

if TYPE_CHECKING:
    from pedseg.inference.predictor import Predictor

__all__ = [
    "BatchOptions",
    "BatchPlan",
    "Case",
    "CaseOutputs",
    "OutputRequest",
    "PredictorPool",
    "case_name",
    "collect_cases",
    "plan_batch",
    "with_clinical",
]


@dataclass(frozen=True)
class Case:
    """One input volume (file or DICOM series folder) and its name in the outputs."""

    name: str
    source: Path


@dataclass(frozen=True)
class OutputRequest:
    """Which files each case gets besides its label map and JSON report."""

    probabilities: bool = False
    preview: bool = False


@dataclass(frozen=True)
class CaseOutputs:
    """Where a case's files go (``None``: not asked for). ``stem``: the path the clinical
    outputs are named after (``OUT/case``); ``clinical``: their files by kind, once the case's
    domain and formats are known (:func:`pedseg.outputs.plan.plan_case_outputs`)."""

    labels: Path
    report: Path
    probabilities: Path | None = None
    preview: Path | None = None
    stem: Path = Path()
    clinical: Mapping[str, Path] = field(default_factory=dict)

    def files(self) -> list[Path]:
        paths = [self.labels, self.probabilities, self.report, self.preview]
        return [p for p in paths if p is not None] + [
            p for p in self.clinical.values() if p != self.labels
        ]


@dataclass(frozen=True)
class BatchPlan:
    """Every case of a command and its outputs; ``folder`` is ``None`` in single-file mode."""

    cases: tuple[Case, ...]
    outputs: Mapping[str, CaseOutputs]
    folder: Path | None

    def files(self, case: Case) -> list[Path]:
        return self.outputs[case.name].files()


def case_name(path: Path) -> str:
    """A case's name: the file name without its volume suffix, or the DICOM folder's name."""
    if path.is_dir():
        return path.name
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def collect_cases(inputs: Sequence[Path]) -> list[Case]:
    """Cases of the given files, DICOM series folders and folders of volumes, in input order."""
    if not inputs:
        raise ConfigError(
            "give at least one input: a volume file, a folder of them or a DICOM folder"
        )
    cases: list[Case] = []
    for item in inputs:
        if not item.exists():
            raise VolumeError(item, "does not exist")
        if item.is_dir() and not is_volume_path(item):
            found = sorted(p for p in item.iterdir() if is_volume_path(p))
            if not found:
                raise ConfigError(
                    f"{item}: holds no volumes (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr) "
                    "or DICOM series folders"
                )
            cases.extend(Case(case_name(p), p) for p in found)
        else:
            cases.append(Case(case_name(item), item))
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            raise ConfigError(
                f"inputs {seen[case.name]} and {case.source} both map to the output name "
                f"{case.name!r}; predict them into different --out folders"
            )
        seen[case.name] = case.source
    return cases


def is_single_file_out(cases: Sequence[Case], out: Path) -> bool:
    """One case and ``out`` named like a volume file: ``out`` is the label map itself."""
    return len(cases) == 1 and volume_suffix(out) in OUTPUT_SUFFIXES and not out.is_dir()


def plan_batch(
    inputs: Sequence[Path], out: Path, request: OutputRequest | None = None
) -> BatchPlan:
    """The cases of ``inputs`` and every output file under ``out`` (see the module docstring);
    refuses outputs equal to an input or inside an input folder."""
    request = request or OutputRequest()
    cases = collect_cases(inputs)
    try:
        return _plan(cases, inputs, out, request)
    except OSError as exc:  # e.g. a --out name too long to even look up
        raise OutputError(out, exc) from exc


def _plan(
    cases: Sequence[Case], inputs: Sequence[Path], out: Path, request: OutputRequest
) -> BatchPlan:
    plans: dict[str, CaseOutputs] = {}
    folder: Path | None = None
    if is_single_file_out(cases, out):
        suffix = volume_suffix(out)
        stem = out.with_name(out.name[: len(out.name) - len(suffix)])
        plans[cases[0].name] = _outputs(stem, suffix, request)
    else:
        if out.exists() and not out.is_dir():
            raise ConfigError(
                f"--out {out}: is a file; give a folder (or a .nii.gz file for one input)"
            )
        if volume_suffix(out) in OUTPUT_SUFFIXES and not out.exists():
            raise ConfigError(
                f"--out {out} names one label map but {len(cases)} inputs were given; give an "
                "output folder"
            )
        for case in cases:
            plans[case.name] = _outputs(out / case.name, ".nii.gz", request)
        folder = out
    _check_outside_inputs([*inputs, *(case.source for case in cases)], out, plans)
    return BatchPlan(cases=tuple(cases), outputs=plans, folder=folder)


def _outputs(stem: Path, suffix: str, request: OutputRequest) -> CaseOutputs:
    def beside(tail: str) -> Path:
        return stem.with_name(stem.name + tail)

    return CaseOutputs(
        labels=beside(suffix),
        report=beside(".json"),
        probabilities=beside("_probabilities" + suffix) if request.probabilities else None,
        preview=beside("_preview.png") if request.preview else None,
        stem=stem,
    )


def _check_outside_inputs(
    sources: Sequence[Path], out: Path, plans: Mapping[str, CaseOutputs]
) -> None:
    target = out.resolve()
    inputs = {source.resolve() for source in sources}
    for folder in (p for p in inputs if p.is_dir()):
        if target == folder or target.is_relative_to(folder):
            raise ConfigError(
                f"--out {out} is inside the input folder {folder}; choose an output folder "
                "outside the inputs"
            )
    for plan in plans.values():
        for path in plan.files():
            if path.resolve() in inputs:
                raise ConfigError(
                    f"output {path} would replace an input file; choose another --out"
                )


@dataclass(frozen=True)
class BatchOptions:
    """What to write and how (``resume`` is the CLI's ``--continue``). ``outputs`` and the mesh
    options are the command line's ``--outputs`` values (``None``: the domain descriptor's
    ``outputs:`` defaults, then pedseg's), resolved per domain by :meth:`formats_for`."""

    out: Path
    save_probabilities: bool = False
    preview: bool = False
    overwrite: bool = False
    resume: bool = False
    outputs: str | None = None
    mesh_format: str | None = None
    mesh_smoothing: int | None = None
    mesh_decimate: float | None = None
    prefetch: bool = True
    """Read (and prepare) the next case in a background thread while one runs."""

    def __post_init__(self) -> None:
        self.formats_for(None)  # bad --outputs values fail here, before any work

    @property
    def request(self) -> OutputRequest:
        return OutputRequest(probabilities=self.save_probabilities, preview=self.preview)

    def formats_for(self, spec: DomainSpec | None) -> OutputFormats:
        """The clinical outputs of a case of domain ``spec``."""
        return parse_outputs(
            self.outputs,
            mesh_format=self.mesh_format,
            smoothing=self.mesh_smoothing,
            decimate=self.mesh_decimate,
            spec=spec,
        )


@dataclass
class PredictorPool:
    """One predictor per domain, opened on first use by ``opener``."""

    opener: Callable[[str], Predictor]
    opened: dict[str, Predictor] = field(default_factory=dict)

    def get(self, domain: str) -> Predictor:
        if domain not in self.opened:
            self.opened[domain] = self.opener(domain)
        return self.opened[domain]

    def model_of(self, domain: str) -> str | None:
        """The model hash domain ``domain`` is predicted with (``None``: not in this model)."""
        try:
            return self.get(domain).info.model_sha256
        except PedsegError:
            return None


def with_clinical(
    plan: BatchPlan, options: BatchOptions, case: Case, spec: DomainSpec
) -> CaseOutputs:
    """The case's outputs with the clinical files of its domain's formats."""
    base = plan.outputs[case.name]
    formats = options.formats_for(spec).without("nifti")
    if not formats.formats:
        return base
    suffix = (
        "".join(base.labels.suffixes[-2:])
        if base.labels.name.endswith(".gz")
        else base.labels.suffix
    )
    clinical = plan_case_outputs(
        base.stem, formats, spec, dicom_input=case.source.is_dir(), nifti_suffix=suffix
    )
    return replace(base, clinical=dict(clinical.files))
