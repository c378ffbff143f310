"""Markdown / HTML / CSV / JSON rendering of a comparison."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pedseg.errors import ConfigError, OutputExistsError
from pedseg.evaluation.compare import Comparison, compare, load_methods
from pedseg.evaluation.plots import dice_boxplot
from pedseg.evaluation.report import (
    ReportFigure,
    parse_formats,
    planned_files,
    render_html,
    render_markdown,
    tables_csv,
    write_report,
)
from tests.evaluation.test_compare import case_dice, write_method


@pytest.fixture
def comparison(tmp_path: Path) -> Comparison:
    write_method(
        tmp_path / "cv" / "dsl-contrastive-unet",
        case_dice([0.9, 0.92, 0.95]),
        slices={"ankle": [0.9, 0.95, 0.97, 0.8]},
    )
    write_method(
        tmp_path / "cv" / "baseline-unet",
        case_dice([0.8, 0.85, 0.83]),
        slices={"ankle": [0.7, 0.75, 0.6, 0.5]},
        distance=2.0,
    )
    return compare(load_methods([tmp_path / "cv"]))


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]


def test_markdown_bold_best_and_tests(comparison: Comparison, tmp_path: Path) -> None:
    text = render_markdown(comparison)
    assert "| Domain | Method | n | Dice (%) | ASSD (mm) | MSSD (mm) |" in text
    # Proposed: Dice 92.3 ± 2.5 and ASSD 1.00, both best; the baseline's 2.00 is not bold.
    assert (
        "| ankle | dsl-contrastive-unet (proposed) | 3 | **92.3 ± 2.5** | **1.00 ± 0.00** |" in text
    )
    assert "| ankle | baseline-unet | 3 | 82.7 ± 2.5 | 2.00 ± 0.00 |" in text
    assert "## Table 2: tests against dsl-contrastive-unet (proposed)" in text
    assert re.search(r"\| KS \(2D slice Dice\) \| ankle \| baseline-unet \| 4 / 4 \|", text)


def test_html_is_self_contained(comparison: Comparison, tmp_path: Path) -> None:
    png = dice_boxplot(comparison.methods, tmp_path / "figures" / "box.png")
    page = render_html(comparison, figures=[ReportFigure("Per-case Dice", png, "caption")])
    parser = _Resources()
    parser.feed(page)
    assert parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    assert not re.search(r"https?://", page)
    assert "<link" not in page and "<script" not in page
    assert '<img alt="Per-case Dice" src="data:image/png;base64,iVBORw0KGgo' in page
    assert "<b>92.3 ± 2.5</b>" in page and "<style>" in page


def test_tables_csv_long_form(comparison: Comparison) -> None:
    rows = list(csv.DictReader(io.StringIO(tables_csv(comparison))))
    dice = [r for r in rows if r["table"] == "table1" and r["metric"] == "dice"]
    assert {(r["method"], r["best"]) for r in dice} == {
        ("dsl-contrastive-unet", "1"),
        ("baseline-unet", "0"),
    }
    best = next(r for r in dice if r["best"] == "1")
    assert float(best["mean"]) == pytest.approx(100 * (0.9 + 0.92 + 0.95) / 3)
    assert {r["table"] for r in rows} == {"table1", "tableS1", "per_label"}


def test_write_report_files(comparison: Comparison, tmp_path: Path) -> None:
    out = tmp_path / "report"
    png = dice_boxplot(comparison.methods, out / "figures" / "box.png")
    written = write_report(comparison, out, figures=[ReportFigure("Box", png)])
    assert written == planned_files(out, ("md", "html", "csv", "json"))
    assert {p.name for p in written} == {
        "report.md", "report.html", "tables.csv", "tests.csv", "comparison.json",
    }  # fmt: skip
    assert "![Box](figures/box.png)" in (out / "report.md").read_text()
    payload = json.loads((out / "comparison.json").read_text())
    assert payload["reference"] == "dsl-contrastive-unet"
    assert payload["figures"][0]["title"] == "Box"
    tests = list(csv.DictReader(io.StringIO((out / "tests.csv").read_text())))
    assert float(tests[0]["dice_reference_mean"]) == pytest.approx(90.5)
    with pytest.raises(OutputExistsError):
        write_report(comparison, out, formats=("md",))
    assert write_report(comparison, out, formats=("md",), overwrite=True) == [out / "report.md"]


def test_parse_formats() -> None:
    assert parse_formats("md, html") == ("md", "html")
    with pytest.raises(ConfigError, match="--format must list some of md, html, csv, json"):
        parse_formats("md,pdf")
