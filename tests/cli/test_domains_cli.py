"""``pedseg domains``, ``add-domain``, ``remove-domain`` and the error mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Runner, one_line_error

KNEE = "schema_version: 1\nname: knee\nlabels: {1: femur, 2: tibia}\nnormalization: zscore\n"


def test_version(pedseg: Runner) -> None:
    result = pedseg("--version")
    assert result.code == 0
    assert result.out.startswith("pedseg ")


def test_domains_list_and_show(pedseg: Runner) -> None:
    listing = pedseg("domains", "list")
    assert listing.code == 0
    for name in ("ankle", "shoulder", "pelvis", "spine"):
        assert name in listing.out
    shown = pedseg("domains", "show", "ankle")
    assert shown.code == 0
    assert "calcaneus" in shown.out and "content hash" in shown.out


def test_unknown_domain_is_one_line(pedseg: Runner) -> None:
    line = one_line_error(pedseg("domains", "show", "ankel"))
    assert "did you mean 'ankle'" in line.lower()


def test_add_show_remove(pedseg: Runner, tmp_path: Path, isolated_home: Path) -> None:
    path = tmp_path / "knee.yaml"
    path.write_text(KNEE)
    assert pedseg("add-domain", str(path)).code == 0
    assert "femur" in pedseg("domains", "show", "knee").out
    line = one_line_error(pedseg("add-domain", str(path)))
    assert "--force" in line
    assert pedseg("add-domain", str(path), "--force").code == 0
    assert pedseg("remove-domain", "knee").code == 0
    assert not (isolated_home / "domains" / "knee.yaml").exists()


def test_invalid_descriptor_names_file_and_field(
    pedseg: Runner, tmp_path: Path, isolated_home: Path
) -> None:
    path = tmp_path / "knee.yaml"
    path.write_text(KNEE.replace("{1: femur, 2: tibia}", "{1: femur, 3: tibia}") + "extra: 1\n")
    line = one_line_error(pedseg("add-domain", str(path)))
    assert f"{path}: labels: ids must be contiguous" in line
    assert f"{path}: extra: unknown key" in line
    assert not (isolated_home / "domains").exists()


def test_debug_shows_traceback(pedseg: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEDSEG_DEBUG", "1")
    result = pedseg("domains", "show", "nope")
    assert result.code == 1
    assert "Traceback" in result.err


def test_remove_builtin_refused(pedseg: Runner) -> None:
    assert "cannot be removed" in one_line_error(pedseg("remove-domain", "ankle"))


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from pedseg.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'nibabel', 'SimpleITK', 'scipy') "
        "if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_usage_error_exits_2_without_traceback(pedseg: Runner) -> None:
    result = pedseg("train", "--epochs", "many")
    assert result.code == 2
    assert "Traceback" not in result.err and "--epochs" in result.err


def test_cli_does_not_need_click_installed() -> None:
    """typer >= 0.29 vendors click; pedseg must not import the standalone package."""
    code = (
        "import sys; sys.modules['click'] = None\n"
        "from pedseg.cli import main\n"
        "raise SystemExit(main(['domains', 'list']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
