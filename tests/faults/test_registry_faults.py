"""Where a domain's data is: a relative ``data.root`` registered from another folder, and a
``--data`` folder that does not exist (the message names the option the user gave)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedseg.data.synth import PhantomConfig, synth_dataset
from tests.cli.conftest import Runner, one_line_error
from tests.fs_faults import snapshot

KNEE = """\
schema_version: 1
name: knee
labels: {1: calcaneus, 2: talus, 3: tibia}
normalization: zscore
data: {root: ../data/ankle}
"""


def test_relative_data_root_is_resolved_once_at_registration(
    pedseg: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    synth_dataset(
        project / "data", domains=("ankle",), cases=2, seed=0, config=PhantomConfig((16, 16, 16))
    )
    (project / "desc").mkdir()
    (project / "desc" / "knee.yaml").write_text(KNEE)
    monkeypatch.chdir(project)
    assert pedseg("add-domain", "desc/knee.yaml").code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    root = project / "data" / "ankle"
    shown = pedseg("domains", "show", "knee")
    assert shown.code == 0, shown.err
    assert f"# data root: {root}\n" in shown.out and f"  root: {root}\n" in shown.out
    checked = pedseg("check", "knee")
    assert checked.code == 0, checked.out
    assert "2 case(s) usable" in checked.out  # it looked in the right folder


@pytest.mark.parametrize("command", ["check", "train"])
def test_missing_data_folder_names_the_data_option(
    pedseg: Runner, tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "nonexistent"
    args = ["-d", "ankle", "--out", str(tmp_path / "run")] if command == "train" else ["ankle"]
    before = snapshot(tmp_path)
    line = one_line_error(pedseg(command, *args, "--data", f"ankle={missing}"))
    assert line == (
        f"error: domain 'ankle': --data ankle={missing}: folder {missing} does not exist; "
        "pass the folder holding imagesTr/ and labelsTr/ as --data ankle=DIR"
    )
    assert snapshot(tmp_path) == before
