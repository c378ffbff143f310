"""Property-based fuzzing of an output folder's manifest: random bytes, mutated manifests and odd
values give a refusal naming the file (``ConfigError``) or a usable manifest, never another
exception, and the file is never changed by being read."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pedseg.errors import ConfigError
from pedseg.inference.manifest import MANIFEST_NAME, FolderLock, OutputManifest

FUZZ = settings(max_examples=150, deadline=2000)
SEED: dict[str, Any] = {
    "format": 2,
    "tool": "pedseg predict",
    "pedseg_version": "0.1.0",
    "cases": {
        "a": {
            "status": "done",
            "input": "/in/a.nii.gz",
            "outputs": ["a.nii.gz", "a.json"],
            "reason": "",
            "domain": "ankle",
            "model_sha256": "0" * 64,
            "history": [{"status": "done", "pid": 1, "time": 0.0}],
        }
    },
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


def _open(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / MANIFEST_NAME).write_bytes(content)
        with FolderLock(folder) as lock:
            try:
                manifest = OutputManifest(folder, lock)
            except ConfigError as error:
                assert str(folder / MANIFEST_NAME) in str(error)
            else:
                manifest.is_done("a", [folder / "a.nii.gz"], model_sha256="0" * 64, domain=None)
                manifest.owned_outputs("a")
        assert (folder / MANIFEST_NAME).read_bytes() == content


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(content: bytes) -> None:
    _open(content)


@FUZZ
@given(json_values)
def test_random_json(value: Any) -> None:
    _open(json.dumps(value).encode())


@FUZZ
@given(st.sampled_from(["format", "cases", "a", "status", "outputs", "history"]), json_values)
def test_mutated_manifest(key: str, value: Any) -> None:
    data = json.loads(json.dumps(SEED))
    if key in ("format", "cases"):
        data[key] = value
    elif key == "a":
        data["cases"]["a"] = value
    else:
        data["cases"]["a"][key] = value
    _open(json.dumps(data).encode())
