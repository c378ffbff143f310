"""No code runs on load: pedseg never unpickles (weights are safetensors, state is JSON, YAML is
read with a safe loader), so a hostile file in place of a model can only be refused."""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import Runner, one_line_error

PACKAGE = Path(__file__).resolve().parents[2] / "pedseg"
# calls that can run code from a file's content
UNSAFE_CALLS = {
    ("torch", "load"),
    ("pickle", "load"),
    ("pickle", "loads"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("marshal", "loads"),
}
UNSAFE_MODULES = {"pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}


def _findings(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            found += [f"import {n}" for n in names if n and n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"eval", "exec"}:
                found.append(f"{func.id}()")
            elif (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in UNSAFE_CALLS
            ):
                found.append(f"{func.value.id}.{func.attr}()")
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    found.append("allow_pickle=...")
    return [f"{path.relative_to(root)}:{item}" for item in found]


def test_the_scan_sees_unsafe_calls(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text(
        "import pickle\nimport torch, yaml\nimport numpy as np\n"
        "torch.load('m.pt')\nyaml.load(text)\nnp.load('a.npy', allow_pickle=True)\neval('1')\n"
        "yaml.safe_load(text)\nnp.load('b.npy', allow_pickle=False)\n"
    )
    assert _findings(sample, tmp_path) == [
        "bad.py:import pickle",
        "bad.py:torch.load()",
        "bad.py:yaml.load()",
        "bad.py:allow_pickle=...",
        "bad.py:eval()",
    ]


def test_the_package_has_no_call_that_runs_code_from_a_file() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 50
    assert [f for path in sources for f in _findings(path)] == []


class _Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "code ran"))  # type: ignore[return-value]


@pytest.mark.parametrize("name", ["model.safetensors", "domains.safetensors"])
def test_pickle_in_place_of_weights_is_refused_and_never_run(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path, name: str
) -> None:
    hostile = shutil.copytree(run, tmp_path / "run")
    marker = tmp_path / "marker.txt"
    (hostile / name).write_bytes(pickle.dumps(_Payload(marker)))
    out = tmp_path / "out"
    result = pedseg("predict", str(ankle_scan), "-m", str(hostile), "-o", str(out / "s.nii.gz"))
    one_line_error(result)
    assert not marker.exists()
    assert not out.exists()
