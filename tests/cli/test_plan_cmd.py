"""``pedseg plan``: tiny phantoms, step times injected through a pre-written cache (nothing timed)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import pedseg.planning.api as api
from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.planning.choices import PlanOptions
from pedseg.planning.plan import read_plan
from pedseg.planning.search import device_variants
from pedseg.runtime import configure_threads
from pedseg.training.timing import StepSpec, StepTimeCache, detect_machine
from tests.cli.conftest import Runner, one_line_error


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan_phantoms")
    synth_dataset(root, domains=("ankle", "shoulder"), cases=3, config=PhantomConfig((48, 48, 16)))
    return root


def _fake_seconds(spec: StepSpec) -> float:
    return 0.02 + 1e-9 * spec.relative_cost() * (0.5 if spec.precision == "bf16" else 1.0)


@pytest.fixture
def prewritten_times(monkeypatch: pytest.MonkeyPatch) -> StepTimeCache:
    """Every candidate's step time in the real cache file; any real measurement fails the test."""
    configure_threads()
    machine = detect_machine("cpu")
    cache = StepTimeCache()
    opts = PlanOptions()
    for size, width, batch, variant in itertools.product(
        opts.candidate_sizes, opts.widths, opts.batch_sizes, device_variants("cpu")
    ):
        spec = StepSpec(
            image_size=size,
            base_width=width,
            depth=opts.depth,
            batch_size=batch,
            num_classes=(4, 3),  # ankle, shoulder
            precision=variant.precision,
            channels_last=variant.channels_last,
        )
        cache.put(machine, spec, _fake_seconds(spec))

    def refuse(*args: object, **kwargs: object) -> float:
        raise AssertionError("a step time was measured for real")

    monkeypatch.setattr(api, "measure_step", refuse)
    return cache


def _args(phantoms: Path, out: Path, *extra: str) -> list[str]:
    return [
        "plan",
        "--domains",
        "ankle",
        "shoulder",
        "--data",
        f"ankle={phantoms / 'ankle'}",
        "--data",
        f"shoulder={phantoms / 'shoulder'}",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_plan_prints_reasons_and_writes_plan_json(
    pedseg: Runner, phantoms: Path, tmp_path: Path, prewritten_times: StepTimeCache
) -> None:
    out = tmp_path / "plan.json"
    result = pedseg(*_args(phantoms, out, "--budget", "30m"))
    assert result.code == 0, result.err
    plan = read_plan(out)
    assert plan.domains == ("ankle", "shoulder") and plan.device == "cpu"
    assert plan.image_size == 96  # the smallest candidate: the phantoms are 48 pixels wide
    for choice, _ in plan.reasons:
        assert choice in result.out
    assert "post-processing per label" in result.out and "talus" in result.out
    assert "expected wall time" in result.out and "cached in" not in result.out
    assert plan.expected_seconds <= 30 * 60


def test_plan_refuses_to_overwrite_without_the_flag(
    pedseg: Runner, phantoms: Path, tmp_path: Path, prewritten_times: StepTimeCache
) -> None:
    out = tmp_path / "plan.json"
    out.write_text("{}")
    line = one_line_error(pedseg(*_args(phantoms, out)))
    assert "already exists" in line and out.read_text() == "{}"
    assert pedseg(*_args(phantoms, out, "--overwrite", "--base-width", "8")).code == 0
    assert read_plan(out).base_width == 8


def test_plan_measures_what_the_cache_lacks(
    pedseg: Runner,
    phantoms: Path,
    tmp_path: Path,
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "measure_step", lambda spec, **kw: _fake_seconds(spec))
    out = tmp_path / "plan.json"
    result = pedseg(*_args(phantoms, out, "--budget", "20m"))
    assert result.code == 0, result.err
    assert "step time(s), cached in" in result.out
    entries = json.loads((isolated_home / "step_times.json").read_text())["entries"]
    assert entries and all(e["seconds"] > 0 for e in entries.values())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--budget", "soon"), "--budget must look like"),
        (("--image-size", "12x"), "--image-size must look like"),
    ],
)
def test_bad_options_are_one_line_errors(
    pedseg: Runner, phantoms: Path, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    assert message in one_line_error(pedseg(*_args(phantoms, tmp_path / "p.json", *extra)))


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from pedseg.cli import main; main(['plan', '--help']); "
    code += "assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--budget" in done.stdout
