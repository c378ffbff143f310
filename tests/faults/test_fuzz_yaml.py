"""Property-based fuzzing of the descriptor loader: random text, mutated descriptors and odd values
in every field give a ``DescriptorError`` (or a valid domain), never another exception or a hang."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pedseg.domains.registry import load_descriptor, normalizations
from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.domains.yamlio import load_yaml_text
from pedseg.errors import MAX_MESSAGE_CHARS, PedsegError

FUZZ = settings(max_examples=150, deadline=2000)
SEED = (Path(__file__).resolve().parents[2] / "domains" / "ankle.yaml").read_text()
FIELDS = (
    "schema_version",
    "name",
    "description",
    "modality",
    "labels",
    "normalization",
    "slice_axis",
    "image_size",
    "postprocess",
    "data",
)


def _load_or_refuse(text: str) -> DomainSpec | None:
    try:
        raw = load_yaml_text(text, source="fuzz.yaml")
        return parse_descriptor(raw, source="fuzz.yaml", known_normalizations=normalizations())
    except PedsegError as error:
        shown = str(error)
        assert "\n" not in shown and len(shown) <= MAX_MESSAGE_CHARS
        return None


@FUZZ
@given(text=st.text(max_size=400))
def test_random_text(text: str) -> None:
    _load_or_refuse(text)


yaml_chars = st.sampled_from(list("{}[]:,-&*!|>'\"#%@`?\n \t0123456789abcxyz.\\"))


@FUZZ
@given(text=st.text(alphabet=yaml_chars, max_size=300))
def test_yaml_punctuation_soup(text: str) -> None:
    _load_or_refuse(text)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(SEED)), st.integers(0, 3), st.sampled_from(list(":{}[],-&* \n#1a"))
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_builtin_descriptor(edits: list[tuple[int, int, str]]) -> None:
    text = SEED
    for at, remove, insert in edits:
        text = text[:at] + insert + text[at + remove :]
    spec = _load_or_refuse(text)
    if spec is not None:
        assert spec.labels and spec.num_classes == len(spec.labels) + 1


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-3, 300)), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(field=st.sampled_from(FIELDS), value=values, data=st.data())
def test_odd_value_in_any_field(field: str, value: Any, data: st.DataObject) -> None:
    raw: dict[str, Any] = yaml.safe_load(SEED)
    raw[field] = value
    if data.draw(st.booleans(), label="nested"):  # odd values one level down as well
        for key in ("labels", "postprocess", "data"):
            if isinstance(raw.get(key), dict) and raw[key]:
                inner = data.draw(st.sampled_from(sorted(raw[key], key=str)), label="key")
                raw[key][inner] = data.draw(values, label="inner")
    _load_or_refuse(yaml.safe_dump(raw, sort_keys=False))


@settings(max_examples=30, deadline=2000)
@given(content=st.binary(max_size=600))
def test_descriptor_file_of_random_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(content)
        try:
            load_descriptor(path)
        except PedsegError as error:
            assert str(error).startswith(str(path))
        assert sorted(p.name for p in Path(folder).iterdir()) == ["fuzz.yaml"]
