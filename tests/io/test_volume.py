"""Volume helpers: the byte-size limit and its environment variable."""

from __future__ import annotations

import numpy as np
import pytest

from pedseg.errors import ConfigError
from pedseg.io import DEFAULT_MAX_BYTES, SourceGeometry, Volume
from pedseg.io import volume as volume_module
from pedseg.io.volume import parse_byte_size, resolve_max_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("4G", 4 * 1024**3),
        ("512M", 512 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1_000", 1000),
    ],
)
def test_parse_byte_size(text: str, expected: int) -> None:
    assert parse_byte_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-5", "0", "4X"])
def test_parse_byte_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="PEDSEG_MAX_VOLUME_BYTES"):
        parse_byte_size(text)


def test_default_limit_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEDSEG_MAX_VOLUME_BYTES", raising=False)
    assert volume_module._default_max_bytes() == (4 * 1024**3, None)
    monkeypatch.setenv("PEDSEG_MAX_VOLUME_BYTES", "1M")
    assert volume_module._default_max_bytes() == (1024**2, None)
    monkeypatch.setenv("PEDSEG_MAX_VOLUME_BYTES", "huge")
    limit, error = volume_module._default_max_bytes()
    assert limit == 4 * 1024**3
    assert error is not None and "huge" in error


def test_invalid_environment_reported_when_default_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volume_module, "_ENV_ERROR", "PEDSEG_MAX_VOLUME_BYTES must be ...")
    with pytest.raises(ConfigError, match="PEDSEG_MAX_VOLUME_BYTES"):
        resolve_max_bytes(DEFAULT_MAX_BYTES)
    assert resolve_max_bytes(100) == 100
    assert resolve_max_bytes(None) is None


def test_with_array_keeps_geometry() -> None:
    source = SourceGeometry(
        shape=(2, 3, 4),
        affine=np.eye(4),
        ornt=np.array([[0, 1], [1, 1], [2, 1.0]]),
        format="nifti",
        header=None,
    )
    volume = Volume(
        array=np.zeros((2, 3, 4)), spacing=(1.0, 1.0, 1.0), affine=np.eye(4), source=source
    )
    labels = volume.with_array(np.ones((2, 3, 4), np.uint8))
    assert labels.source is source and labels.array.dtype == np.uint8 and labels.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="does not match"):
        volume.with_array(np.zeros((2, 3, 5)))
