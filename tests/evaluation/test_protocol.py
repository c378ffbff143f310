"""Fold plans: roles, coverage, determinism, unequal domains, the plan file and fold data folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedseg.data.dataset import Case, list_cases
from pedseg.domains.spec import DataSpec, DomainSpec
from pedseg.errors import ConfigError, DatasetError
from pedseg.evaluation.protocol import (
    CrossvalState,
    FoldPlan,
    fold_data,
    parse_folds,
    plan_folds,
    save_plan,
)


def _cases(**counts: int) -> dict[str, list[str]]:
    return {name: [f"{name}_{i:03d}" for i in range(n)] for name, n in counts.items()}


def _check_roles(plan: FoldPlan, cases: dict[str, list[str]]) -> None:
    for fold in plan.folds:
        for name, part in fold.domains:
            roles = [*part.train, *part.val, *part.test]
            assert len(roles) == len(set(roles)), "a case has two roles in one fold"
            assert sorted(roles) == sorted(cases[name]), "every case has a role"
            assert len(part.val) == 1 and len(part.train) >= 1


def test_loo_tests_every_case_exactly_once_with_unequal_domains() -> None:
    cases = _cases(ankle=5, shoulder=3)
    plan = plan_folds(cases, folds=None, seed=0)
    assert plan.method == "loo" and len(plan.folds) == 5  # = the largest number of cases
    _check_roles(plan, cases)
    for name, n in (("ankle", 5), ("shoulder", 3)):
        tested = [c for fold in plan.folds for c in fold.domain(name).test]
        assert sorted(tested) == sorted(cases[name])  # each exactly once
        per_fold = [len(fold.domain(name).test) for fold in plan.folds]
        assert per_fold == [1] * n + [0] * (5 - n)  # stops once each case was tested
    assert plan.folds[4].tested_domains == ("ankle",)


def test_loo_validation_is_the_next_case_of_the_order() -> None:
    plan = plan_folds(_cases(knee=4), folds=None, seed=3)
    order = [fold.domain("knee").test[0] for fold in plan.folds]  # the seeded permutation
    assert sorted(order) == _cases(knee=4)["knee"]
    for i, fold in enumerate(plan.folds):
        assert fold.domain("knee").val == (order[(i + 1) % 4],)


def test_kfold_partitions_each_domain() -> None:
    cases = _cases(ankle=10, shoulder=7)
    plan = plan_folds(cases, folds=3, seed=1)
    assert plan.method == "kfold" and plan.k == 3 and len(plan.folds) == 3
    _check_roles(plan, cases)
    for name, n in (("ankle", 10), ("shoulder", 7)):
        groups = [fold.domain(name).test for fold in plan.folds]
        assert sorted(c for g in groups for c in g) == sorted(cases[name])
        sizes = sorted(len(g) for g in groups)
        assert sizes[-1] - sizes[0] <= 1 and sizes[-1] == math.ceil(n / 3)


def test_plans_are_deterministic_and_seeded() -> None:
    cases = _cases(ankle=6, shoulder=4)
    assert plan_folds(cases, folds=None, seed=7) == plan_folds(cases, folds=None, seed=7)
    assert plan_folds(cases, folds=None, seed=7) != plan_folds(cases, folds=None, seed=8)
    # a domain's order does not depend on the other domains
    alone = plan_folds(_cases(ankle=6), folds=None, seed=7)
    both = plan_folds(cases, folds=None, seed=7)
    assert [f.domain("ankle") for f in alone.folds] == [f.domain("ankle") for f in both.folds]


def test_max_folds_keeps_the_first_folds() -> None:
    cases = _cases(ankle=4)
    full = plan_folds(cases, folds=None, seed=0)
    short = plan_folds(cases, folds=None, seed=0, max_folds=2)
    assert short.folds == full.folds[:2]


@pytest.mark.parametrize(
    ("counts", "folds", "match"),
    [
        ({"ankle": 2}, None, "leave-one-out needs at least 3"),
        ({"ankle": 3}, 2, "too few for 2-fold"),
        ({"ankle": 3}, 4, "too few for 4-fold"),
    ],
)
def test_too_few_cases_is_a_clear_error(
    counts: dict[str, int], folds: int | None, match: str
) -> None:
    with pytest.raises(DatasetError, match=match):
        plan_folds(_cases(**counts), folds=folds, seed=0)


def test_parse_folds() -> None:
    assert parse_folds("loo") is None and parse_folds("LOO") is None
    assert parse_folds("5") == 5
    for bad in ("1", "x", "0"):
        with pytest.raises(ConfigError, match="--folds must be 'loo' or an integer >= 2"):
            parse_folds(bad)


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=3, max_value=9), min_size=1, max_size=3),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_loo_property(counts: list[int], seed: int) -> None:
    cases = {f"d{i}": [f"c{j}" for j in range(n)] for i, n in enumerate(counts)}
    plan = plan_folds(cases, folds=None, seed=seed)
    assert len(plan.folds) == max(counts)
    _check_roles(plan, cases)
    for name, ids in cases.items():
        assert sorted(c for f in plan.folds for c in f.domain(name).test) == sorted(ids)


def test_plan_round_trip_and_conflicting_plan(tmp_path: Path) -> None:
    cases = _cases(ankle=4, shoulder=3)
    plan = plan_folds(cases, folds=None, seed=0)
    path = tmp_path / "folds.json"
    save_plan(path, plan)
    raw = json.loads(path.read_text())
    assert raw["folds"]["0"]["ankle"]["test"] == list(plan.folds[0].domain("ankle").test)
    assert FoldPlan.from_dict(raw) == plan
    save_plan(path, plan_folds(cases, folds=None, seed=0, max_folds=2))  # a prefix agrees
    with pytest.raises(ConfigError, match="holds another fold plan"):
        save_plan(path, plan_folds(cases, folds=None, seed=1))


def test_state_refuses_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "crossval.json"
    state = CrossvalState(path, {"training": {"epochs": 1}})
    assert state.status("m", 0) == "pending"
    state.set("m", 0, "done")
    assert CrossvalState(path, {"training": {"epochs": 1}}).status("m", 0) == "done"
    with pytest.raises(ConfigError, match="epochs was 1, now 2"):
        CrossvalState(path, {"training": {"epochs": 2}})


def test_fold_data_links_only_train_and_val_cases(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for i in range(4):
            name = f"c{i}_0000.nii.gz" if sub == "imagesTr" else f"c{i}.nii.gz"
            (root / sub / name).write_bytes(f"{sub}{i}".encode())
    spec = DomainSpec(
        name="knee",
        labels=((1, "femur"),),
        normalization="zscore",
        data=DataSpec(root=root),
    )
    cases = {"knee": {c.case_id: c for c in list_cases(spec)}}
    assert all(isinstance(c, Case) for c in cases["knee"].values())
    plan = plan_folds({"knee": sorted(cases["knee"])}, folds=None, seed=0)
    fold = plan.folds[0]
    (fold_spec,) = fold_data([spec], cases, fold, tmp_path / "fold-0")
    kept = sorted(c.case_id for c in list_cases(fold_spec))
    part = fold.domain("knee")
    assert kept == sorted([*part.train, *part.val]) and part.test[0] not in kept
    linked = fold_spec.data.images_dir / f"{part.val[0]}_0000.nii.gz"  # type: ignore[union-attr]
    assert linked.read_bytes() == (root / "imagesTr" / linked.name).read_bytes()
    # the next fold re-uses the folder layout: a stale case file is removed
    (fold_spec2,) = fold_data([spec], cases, plan.folds[1], tmp_path / "fold-0")
    part2 = plan.folds[1].domain("knee")
    assert sorted(c.case_id for c in list_cases(fold_spec2)) == sorted([*part2.train, *part2.val])
