"""Loading method folders and building Tables 1, S1 and 2 (scipy is the reference for p-values)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pedseg.errors import ConfigError, DatasetError, UnknownNameError
from pedseg.evaluation.compare import (
    KS_TEST,
    WILCOXON_TEST,
    compare,
    expand_method_dirs,
    load_method,
    load_methods,
)
from pedseg.evaluation.stats import holm_correction

COLUMNS = (
    "domain", "case", "label", "label_name", "dice", "sensitivity", "specificity", "ravd",
    "assd", "mssd", "hd95", "volume_ref_ml", "volume_pred_ml", "empty_reference",
    "empty_prediction",
)  # fmt: skip
LABELS = {"ankle": ((1, "tibia"), (2, "talus")), "shoulder": ((1, "humerus"),)}


def write_method(
    folder: Path,
    dice: Mapping[tuple[str, str], float],
    *,
    slices: Mapping[str, Sequence[float]] | None = None,
    distance: float = 1.0,
    columns: Sequence[str] = COLUMNS,
) -> Path:
    """``metrics.csv`` with, per (domain, case), every label's Dice = ``dice`` ± 0.01 (mean exact)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for (domain, case), value in dice.items():
            labels = LABELS[domain]
            offsets = [0.0] if len(labels) == 1 else [0.01, -0.01]
            for (label, name), off in zip(labels, offsets, strict=True):
                row = {
                    "domain": domain, "case": case, "label": label, "label_name": name,
                    "dice": value + off, "sensitivity": value, "specificity": 0.99,
                    "ravd": 0.1, "assd": distance, "mssd": 10 * distance, "hd95": 5 * distance,
                    "volume_ref_ml": 1.0, "volume_pred_ml": 1.0, "empty_reference": False,
                    "empty_prediction": False,
                }  # fmt: skip
                writer.writerow(row)
    if slices is not None:
        with (folder / "slice_dice.csv").open("w", newline="") as fh:
            plain = csv.writer(fh)
            plain.writerow(["domain", "case", "label", "slice", "dice"])
            for domain, values in slices.items():
                for i, v in enumerate(values):
                    plain.writerow([domain, f"{domain}_0", 1, i, v])
    return folder


def case_dice(values: Sequence[float], domain: str = "ankle") -> dict[tuple[str, str], float]:
    return {(domain, f"{domain}_{i}"): v for i, v in enumerate(values)}


@pytest.fixture
def crossval(tmp_path: Path) -> Path:
    """A crossval-like folder: the proposed method beats the two others on every case."""
    root = tmp_path / "cv"
    rng = np.random.default_rng(0)
    good = [0.90, 0.88, 0.93, 0.91, 0.87, 0.92]
    for name, drop in (
        ("dsl-contrastive-unet", 0.0),
        ("baseline-unet", 0.05),
        ("joint-unet", 0.02),
    ):
        dice = {**case_dice([g - drop * (1 + i / 10) for i, g in enumerate(good)])}
        dice.update(case_dice([0.8 - drop, 0.82 - drop, 0.79 - drop], "shoulder"))
        slices = {
            "ankle": np.clip(rng.normal(0.85 - drop, 0.05, 40), 0, 1).tolist(),
            "shoulder": np.clip(rng.normal(0.80 - drop, 0.05, 30), 0, 1).tolist(),
        }
        write_method(root / name, dice, slices=slices, distance=1.0 + drop * 10)
    (root / "folds").mkdir()  # not a method folder
    return root


def test_expand_crossval_folder_and_names(crossval: Path) -> None:
    folders = expand_method_dirs([crossval])
    assert [f.name for f in folders] == ["baseline-unet", "dsl-contrastive-unet", "joint-unet"]
    # A method folder given directly and again through its parent is loaded once.
    again = expand_method_dirs([crossval / "joint-unet", crossval])
    assert [f.name for f in again] == ["joint-unet", "baseline-unet", "dsl-contrastive-unet"]
    methods = load_methods([crossval])
    assert [m.name for m in methods] == [f.name for f in folders]
    assert methods[0].domains == ("ankle", "shoulder")
    assert methods[0].slice_dice is not None and methods[0].slice_dice["ankle"].size == 40


def test_clashing_names_are_qualified(tmp_path: Path) -> None:
    for run in ("run1", "run2"):
        write_method(tmp_path / run / "dsl-unet", case_dice([0.9, 0.8]))
    methods = load_methods([tmp_path / "run1", tmp_path / "run2"])
    assert [m.name for m in methods] == ["run1/dsl-unet", "run2/dsl-unet"]


def test_evaluate_folder_without_domain_column(tmp_path: Path) -> None:
    folder = tmp_path / "preds" / "evaluation"
    write_method(folder, case_dice([0.9, 0.8]), columns=COLUMNS[1:])
    with pytest.raises(DatasetError, match=r"metrics\.csv.*no 'domain' column.*summary\.json"):
        load_methods([tmp_path / "preds"])
    (folder / "summary.json").write_text(json.dumps({"domain": "ankle"}))
    (method,) = load_methods([tmp_path / "preds"])
    assert method.name == "preds"  # an `evaluation` folder takes its parent's name
    assert method.domains == ("ankle",)
    assert method.case_values("dice") == pytest.approx(
        {("ankle", "ankle_0"): 0.9, ("ankle", "ankle_1"): 0.8}
    )


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    folder = write_method(
        tmp_path / "m", case_dice([0.9]), columns=[c for c in COLUMNS if c != "mssd"]
    )
    with pytest.raises(DatasetError, match=r"m/metrics\.csv: required column 'mssd' is missing"):
        load_method(folder)


def test_bad_values_are_refused(tmp_path: Path) -> None:
    folder = write_method(tmp_path / "m", case_dice([90.0]))
    with pytest.raises(DatasetError, match=r"line 2, column 'dice' must be a fraction"):
        load_method(folder)
    text = (folder / "metrics.csv").read_text().replace("90.01", "oops", 1)
    (folder / "metrics.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"line 2, column 'dice': 'oops' is not a number"):
        load_method(folder)


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder"):
        expand_method_dirs([tmp_path / "absent"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no metrics.csv"):
        expand_method_dirs([tmp_path / "empty"])


def test_table1_mean_std_over_label_averaged_cases(crossval: Path) -> None:
    methods = load_methods([crossval])
    result = compare(methods)
    assert result.reference == "dsl-contrastive-unet"
    table = result.table("table1")
    rows = {(r.group, r.method): r for r in table.rows}
    ankle = rows[(("ankle",), "baseline-unet")]
    expected = np.array(
        [g - 0.05 * (1 + i / 10) for i, g in enumerate([0.90, 0.88, 0.93, 0.91, 0.87, 0.92])]
    )
    dice = ankle.stats["dice"]
    assert dice is not None and dice.n == 6
    assert dice.mean == pytest.approx(100 * expected.mean())
    assert dice.std == pytest.approx(100 * expected.std(ddof=1))
    # "all" pools the 6 ankle and 3 shoulder cases.
    pooled = rows[(("all",), "baseline-unet")].stats["dice"]
    assert pooled is not None and pooled.n == 9
    # Best: the proposed method has the highest Dice and the lowest distances everywhere.
    for group in ("ankle", "shoulder", "all"):
        assert rows[((group,), "dsl-contrastive-unet")].best == {"dice", "assd", "mssd"}
        assert rows[((group,), "baseline-unet")].best == frozenset()
    # Table S1: equal specificity for all (0.99): a tie, so every method is bold there.
    s1 = {(r.group, r.method): r for r in result.table("tableS1").rows}
    assert all("specificity" in r.best for r in s1.values())
    assert "sensitivity" in s1[(("ankle",), "dsl-contrastive-unet")].best
    # Per-label table: one group per (domain, label).
    groups = list(dict.fromkeys(r.group for r in result.table("per_label").rows))
    assert groups == [("ankle", "tibia"), ("ankle", "talus"), ("shoulder", "humerus")]


def test_tests_match_scipy(crossval: Path) -> None:
    methods = {m.name: m for m in load_methods([crossval])}
    result = compare(list(methods.values()), reference="dsl-contrastive-unet")
    ref = methods["dsl-contrastive-unet"]
    rows = {(t.test, t.scope, t.method): t for t in result.tests}
    assert {t.scope for t in result.tests} == {"all", "ankle", "shoulder"}
    for name in ("baseline-unet", "joint-unet"):
        other = methods[name]
        a, b = ref.slice_samples(), other.slice_samples()
        assert a is not None and b is not None
        ks = rows[(KS_TEST, "all", name)]
        assert ks.pvalue == pytest.approx(stats.ks_2samp(a, b).pvalue)
        assert (ks.n_reference, ks.n_method) == (70, 70)
        x = ref.case_values("dice", "ankle")
        y = other.case_values("dice", "ankle")
        keys = sorted(x)
        wil = rows[(WILCOXON_TEST, "ankle", name)]
        expected = stats.wilcoxon([x[k] for k in keys], [y[k] for k in keys]).pvalue
        assert wil.pvalue == pytest.approx(expected)
        # The reference wins on all 6 ankle cases: the exact two-sided p-value is 2 / 2**6.
        assert wil.pvalue == pytest.approx(2 / 64)
        assert wil.n_reference == 6 and wil.dice_reference is not None
    # Holm over the two methods of each (test, scope).
    family = [rows[(KS_TEST, "all", n)] for n in ("baseline-unet", "joint-unet")]
    adjusted = holm_correction([t.pvalue or 0.0 for t in family])
    assert [t.pvalue_holm for t in family] == pytest.approx(adjusted.tolist())


def test_unmatched_cases_and_missing_slices(tmp_path: Path) -> None:
    write_method(tmp_path / "a", case_dice([0.9, 0.8, 0.7]), slices={"ankle": [0.9, 0.8]})
    write_method(tmp_path / "b", case_dice([0.85, 0.75]))
    result = compare(load_methods([tmp_path / "a", tmp_path / "b"]))
    assert result.reference == "a"  # no dsl-contrastive-unet: the first
    ks = next(t for t in result.tests if t.test == KS_TEST)
    assert ks.pvalue is None and "b has no slice_dice.csv" in ks.note
    wil = next(t for t in result.tests if t.test == WILCOXON_TEST)
    assert wil.n_reference == 2 and "1 unmatched case(s)" in wil.note
    assert wil.pvalue == pytest.approx(stats.wilcoxon([0.9, 0.8], [0.85, 0.75]).pvalue)
    assert any("b has no slice_dice.csv" in note for note in result.notes)


def test_unknown_reference(crossval: Path) -> None:
    with pytest.raises(UnknownNameError, match="reference method 'dsl-unet'"):
        compare(load_methods([crossval]), reference="dsl-unet")


def test_infinite_ravd_stays_visible(tmp_path: Path) -> None:
    folder = write_method(tmp_path / "m", case_dice([0.9, 0.8]))
    lines = (folder / "metrics.csv").read_text().splitlines()
    head = lines[0].split(",")
    cells = lines[1].split(",")
    cells[head.index("ravd")] = "inf"
    (folder / "metrics.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    write_method(tmp_path / "n", case_dice([0.9, 0.8]))
    result = compare(load_methods([tmp_path / "m", tmp_path / "n"]))
    rows = {r.method: r for r in result.table("tableS1").rows}
    ravd = rows["m"].stats["ravd"]
    assert ravd is not None and math.isinf(ravd.mean) and math.isinf(ravd.std)
    assert "ravd" in rows["n"].best and "ravd" not in rows["m"].best
