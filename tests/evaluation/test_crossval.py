"""End-to-end cross-validation on tiny phantoms: plan, train, predict, evaluate, continue."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from pedseg.data.dataset import list_cases
from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, DatasetError
from pedseg.evaluation.crossval import CrossvalConfig, CrossvalEvent, run_crossval
from pedseg.evaluation.crossval_summary import settings_note
from pedseg.training.config import TrainConfig

DOMAINS = ("ankle", "shoulder")


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cv_phantoms")
    synth_dataset(root, domains=DOMAINS, cases=3, seed=0, config=PhantomConfig(shape=(32, 32, 16)))
    return root


def _specs(phantoms: Path) -> list[DomainSpec]:
    return DomainRegistry().resolve(DOMAINS, data={d: phantoms / d for d in DOMAINS})


def _config(*, schemes: tuple[str, ...], max_folds: int | None) -> CrossvalConfig:
    train = TrainConfig(
        domains=DOMAINS,
        epochs=1,
        batch_size=4,
        image_size=(32, 32),
        base_width=4,
        depth=3,
        steps_per_epoch=2,
        device="cpu",
        augment=False,
    )
    return CrossvalConfig(train=train, schemes=schemes, folds=None, max_folds=max_folds)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _check_method(out: Path, method: str, folds: int) -> None:
    folder = out / method
    plan = json.loads((out / "folds.json").read_text())["folds"]
    rows = _rows(folder / "metrics.csv")
    tested = {(d, c) for f in range(folds) for d in DOMAINS for c in plan[str(f)][d]["test"]}
    assert {(r["domain"], r["case"]) for r in rows} == tested
    labels = {d: len(DomainRegistry().get(d).labels) for d in DOMAINS}
    assert len(rows) == sum(labels[d] for d, _ in tested)  # one row per case and label
    for row in rows:  # the fold column matches the plan; metrics are real numbers
        assert row["case"] in plan[row["fold"]][row["domain"]]["test"]
        assert 0.0 <= float(row["dice"]) <= 1.0
    for domain, case in tested:
        assert (folder / "predictions" / domain / f"{case}.nii.gz").is_file()
    assert {r["domain"] for r in _rows(folder / "slice_dice.csv")} == set(DOMAINS)
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["domains"]) == set(DOMAINS)
    n = sum(1 for d, _ in tested if d == "ankle")
    assert summary["domains"]["ankle"]["labels"]["1"]["metrics"]["dice"]["n"] == n


def test_two_folds_and_continue(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    specs = _specs(phantoms)
    config = _config(schemes=("dsl-contrastive",), max_folds=2)
    events: list[CrossvalEvent] = []
    result = run_crossval(config, specs, out=out, callback=events.append)
    (method,) = result.methods
    assert method.folds_run == (0, 1) and method.folds_skipped == ()
    _check_method(out, "dsl-contrastive-unet", folds=2)
    assert any(e.kind == "train" and e.train_event is not None for e in events)
    note = settings_note(out) or ""  # what the comparison report states about the study
    assert note.startswith(f"training settings of {out} (folds: ")
    assert f"domains {' '.join(DOMAINS)}" in note and "seg_loss ce" in note
    assert settings_note(tmp_path) is None
    # test cases never reach the fold's training data
    plan = json.loads((out / "folds.json").read_text())["folds"]
    for fold in ("0", "1"):
        for domain in DOMAINS:
            kept = {
                p.name.split(".")[0]
                for p in (out / "folds" / f"fold-{fold}" / domain / "labelsTr").iterdir()
            }
            assert plan[fold][domain]["test"][0] not in kept
            assert kept == {*plan[fold][domain]["train"], *plan[fold][domain]["val"]}

    # Simulate an interruption of fold 1: its predictions are gone and it is marked incomplete.
    state_path = out / "crossval.json"
    state = json.loads(state_path.read_text())
    state["methods"]["dsl-contrastive-unet"]["folds"]["1"]["status"] = "training"
    state_path.write_text(json.dumps(state))
    preds = out / "dsl-contrastive-unet" / "predictions"
    _remove_predictions(preds, plan["1"])
    kept_pred = out / "dsl-contrastive-unet" / "fold-0" / "metrics.csv"
    before = kept_pred.stat().st_mtime_ns
    run0 = out / "dsl-contrastive-unet" / "fold-0" / "run" / "model.safetensors"
    run0_time = run0.stat().st_mtime_ns
    events.clear()
    again = run_crossval(config, specs, out=out, callback=events.append)
    assert again.methods[0].folds_skipped == (0,) and again.methods[0].folds_run == (1,)
    assert {e.fold for e in events if e.kind in ("train", "predict")} == {1}
    assert any(e.kind == "train" for e in events)  # not finished: trained (resumed) again
    assert kept_pred.stat().st_mtime_ns == before and run0.stat().st_mtime_ns == run0_time
    _check_method(out, "dsl-contrastive-unet", folds=2)

    # A finished fold whose predictions vanished is predicted again, without training.
    _remove_predictions(preds, plan["0"])
    events.clear()
    third = run_crossval(config, specs, out=out, callback=events.append)
    assert third.methods[0].folds_run == (0,) and third.methods[0].folds_skipped == (1,)
    assert not any(e.kind == "train" for e in events)
    assert run0.stat().st_mtime_ns == run0_time
    _check_method(out, "dsl-contrastive-unet", folds=2)


def _remove_predictions(folder: Path, fold: dict[str, dict[str, list[str]]]) -> None:
    for domain, roles in fold.items():
        for case in roles["test"]:
            (folder / domain / f"{case}.nii.gz").unlink()


def test_other_settings_are_refused(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    out.mkdir()
    specs = _specs(phantoms)
    config = _config(schemes=("dsl-contrastive",), max_folds=1)
    state = {"format": 1, "settings": {"folds": "loo", "training": {"epochs": 5}}, "methods": {}}
    (out / "crossval.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="other settings"):
        run_crossval(config, specs, out=out)


@pytest.mark.slow
def test_full_loo_with_baseline_and_resume(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    specs = _specs(phantoms)
    config = _config(schemes=("dsl-contrastive", "baseline"), max_folds=None)
    result = run_crossval(config, specs, out=out)
    assert [m.method for m in result.methods] == ["dsl-contrastive-unet", "baseline-unet"]
    for method in ("dsl-contrastive-unet", "baseline-unet"):
        _check_method(out, method, folds=3)
    assert (
        out / "baseline-unet" / "fold-2" / "run" / "baseline" / "ankle" / "model.json"
    ).is_file()
    # each case tested exactly once (3 cases, 3 folds)
    rows = [r for r in _rows(out / "baseline-unet" / "metrics.csv") if r["label"] == "1"]
    tested = sorted((r["domain"], r["case"]) for r in rows)
    everything = sorted((s.name, c.case_id) for s in specs for c in list_cases(s))
    assert tested == everything
    # an interrupted baseline fold with a checkpoint is resumed, not restarted
    state_path = out / "crossval.json"
    state = json.loads(state_path.read_text())
    state["methods"]["baseline-unet"]["folds"]["2"]["status"] = "training"
    state_path.write_text(json.dumps(state))
    (out / "baseline-unet" / "fold-2" / "metrics.csv").unlink()
    again = run_crossval(config, specs, out=out)
    assert again.methods[0].folds_run == () and again.methods[1].folds_run == (2,)


def test_shards_merged_by_compare_equal_the_unsharded_study(phantoms: Path, tmp_path: Path) -> None:
    """Two shards of (1 method x 2 folds): one fold in each part's folder; merged, the method's
    rows and tables equal the unsharded study's."""
    import dataclasses

    from pedseg.evaluation.compare import compare, load_methods

    specs = _specs(phantoms)
    config = _config(schemes=("dsl",), max_folds=2)
    whole = tmp_path / "whole"
    run_crossval(config, specs, out=whole, cache_root=tmp_path / "c0")
    parts = []
    for index in (1, 2):
        part = tmp_path / f"part{index}"
        sharded = dataclasses.replace(config, shard=(index, 2))
        result = run_crossval(sharded, specs, out=part, cache_root=tmp_path / f"c{index}")
        assert sum(len(m.folds_run) for m in result.methods) == 1  # one of the 2 jobs
        parts.append(part)
    merged = sorted(load_methods(parts), key=lambda m: m.name)
    unsharded = sorted(load_methods([whole]), key=lambda m: m.name)
    assert [m.name for m in merged] == [m.name for m in unsharded]
    for ours, theirs in zip(merged, unsharded, strict=True):
        key = lambda r: (r.domain, r.case, r.label)  # noqa: E731
        assert sorted(ours.rows, key=key) == sorted(theirs.rows, key=key)
    for table in ("table1", "tableS1", "per_label"):
        ours, theirs = compare(merged).table(table), compare(unsharded).table(table)
        assert sorted(_shown(ours), key=str) == sorted(_shown(theirs), key=str)
    copy = tmp_path / "part1-copy"  # the same shard twice: its cases would count twice
    shutil.copytree(parts[0], copy)
    with pytest.raises(DatasetError, match="shards overlap"):
        load_methods([parts[0], copy])


def test_shard_values_are_checked() -> None:
    import dataclasses

    config = _config(schemes=("dsl",), max_folds=1)
    for shard in ((0, 2), (3, 2), (1, 0)):
        with pytest.raises(ConfigError, match="--shard must be I/N"):
            dataclasses.replace(config, shard=shard)


def _shown(table: object) -> list[tuple[object, ...]]:
    """A comparison table as displayed (rounded: the parts' rows come in another order)."""
    return [
        (
            row.group,
            row.method,
            sorted(row.best),
            {
                k: None if v is None else (round(v.mean, 6), round(v.std, 6), v.n)
                for k, v in row.stats.items()
            },
        )
        for row in table.rows  # type: ignore[attr-defined]
    ]


def test_budget_plans_each_fold_from_its_training_data(
    phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import pedseg.planning.api as api
    from tests.cli.test_train_recipe_cli import _tiny_plan

    planned: list[set[str]] = []
    budgets: list[float] = []

    def fake_plan_run(specs: list[DomainSpec], **kwargs: object) -> object:
        # the fold's descriptors point at its training data: no test case among them
        planned.append({c.case_id for spec in specs for c in list_cases(spec)})
        assert kwargs["overrides"] == {"base_width": 4}
        budgets.append(float(kwargs["budget_s"]))  # type: ignore[arg-type]
        return api.PlanOutcome(
            plan=_tiny_plan(budget_s=float(kwargs["budget_s"])),  # type: ignore[arg-type]
            fingerprints=(),
            measured=(),
            times_file=tmp_path / "t.json",
        )

    monkeypatch.setattr(api, "plan_run", fake_plan_run)
    config = dataclasses.replace(
        _config(schemes=("dsl-contrastive",), max_folds=1), budget_s=4.0, explicit=("base_width",)
    )
    out = tmp_path / "cv"
    run_crossval(config, _specs(phantoms), out=out, cache_root=tmp_path / "cache")
    plan = json.loads((out / "folds.json").read_text())["folds"]["0"]
    tested = {c for d in DOMAINS for c in plan[d]["test"]}
    assert planned and not (planned[0] & tested)
    run = out / "dsl-contrastive-unet" / "fold-0" / "run"
    training = json.loads((run / "model.json").read_text())["training"]
    assert (training["image_size"], training["schedule"], training["base_width"]) == (
        [32, 32],
        "cosine",
        4,
    )
    # the fold's run is planned for the study's budget (the refit to it is tested with a fake
    # clock in tests/training; here the wall clock would make it depend on the machine's load)
    assert budgets == [4.0]
    settings = json.loads((out / "crossval.json").read_text())["settings"]
    assert settings["budget_s"] == 4.0 and settings["explicit"] == ["base_width"]
    note = settings_note(out) or ""  # not the unplanned config's sizes: the budget, what was given
    assert "planned for a 0.0666667-minute budget" in note and note.endswith("given: base_width 4")
    assert "batch_size" not in note
