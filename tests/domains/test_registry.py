"""Registry: built-ins via entry points, the user folder, plugins, add/remove semantics."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pedseg.domains import registry as reg
from pedseg.domains.registry import DomainRegistry, get_normalization, parse_data_overrides
from pedseg.errors import ConfigError, RegistryError, UnknownNameError

KNEE = """\
schema_version: 1
name: knee
labels: {1: femur, 2: tibia}
normalization: minmax
"""


@pytest.fixture
def clear_caches() -> Iterator[None]:
    reg._entry_points.cache_clear()
    reg.normalizations.cache_clear()
    yield
    reg._entry_points.cache_clear()
    reg.normalizations.cache_clear()


def test_builtins_are_registered_through_entry_points() -> None:
    registry = DomainRegistry()
    entries = {e.name: e for e in registry.entries()}
    assert {"ankle", "shoulder", "pelvis", "spine"} <= set(entries)
    assert entries["ankle"].origin == "built-in"
    assert registry.get("ankle").label_names == ("calcaneus", "talus", "tibia")
    assert registry.get("shoulder").label_names == ("humerus", "scapula")
    assert registry.get("pelvis").label_names == ("femur", "ilium", "spine", "sacrum")
    assert registry.get("spine").label_names == ("L1", "L2", "L3", "L4", "L5")


def test_unknown_domain_suggests(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'shoulder'"):
        DomainRegistry().get("sholder")


def test_add_then_remove(tmp_path: Path, isolated_home: Path) -> None:
    source = tmp_path / "knee.yaml"
    source.write_text(KNEE)
    registry = DomainRegistry()
    spec = registry.add(source)
    assert spec.name == "knee"
    assert (isolated_home / "domains" / "knee.yaml").is_file()
    assert registry.get("knee").content_hash() == spec.content_hash()
    assert "knee" in registry.names()
    with pytest.raises(RegistryError, match="already registered.*--force"):
        registry.add(source)
    registry.add(source, force=True)
    registry.remove("knee")
    assert "knee" not in registry.names()


def test_builtin_cannot_be_removed() -> None:
    with pytest.raises(RegistryError, match="built-in and cannot be removed"):
        DomainRegistry().remove("ankle")


def test_user_domain_shadows_builtin_only_with_force(tmp_path: Path) -> None:
    source = tmp_path / "ankle.yaml"
    source.write_text(KNEE.replace("knee", "ankle"))
    registry = DomainRegistry()
    with pytest.raises(RegistryError, match="built-in"):
        registry.add(source)
    registry.add(source, force=True)
    assert registry.get("ankle").label_names == ("femur", "tibia")
    registry.remove("ankle")
    assert registry.get("ankle").label_names == ("calcaneus", "talus", "tibia")


def test_invalid_descriptor_is_not_registered(tmp_path: Path, isolated_home: Path) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(KNEE.replace("minmax", "nope"))
    with pytest.raises(Exception, match="normalization"):
        DomainRegistry().add(source)
    assert not (isolated_home / "domains").exists() or not any(
        (isolated_home / "domains").iterdir()
    )


def test_resolve_applies_data_overrides(tmp_path: Path) -> None:
    specs = DomainRegistry().resolve(["ankle", "shoulder"], data={"ankle": tmp_path})
    assert specs[0].data is not None and specs[0].data.root == tmp_path
    with pytest.raises(ConfigError, match="not selected"):
        DomainRegistry().resolve(["ankle"], data={"spine": tmp_path})
    with pytest.raises(ConfigError, match="twice"):
        DomainRegistry().resolve(["ankle", "ankle"])


@pytest.mark.parametrize("bad", ["ankle", "=dir", "ankle="])
def test_parse_data_overrides_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="NAME=DIR"):
        parse_data_overrides([bad])


def test_third_party_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clear_caches: None
) -> None:
    """A package declaring the entry points gets its domain and normalization registered."""
    (tmp_path / "kneeplugin.py").write_text(
        "import numpy as np\n"
        "def knee():\n"
        "    return {'schema_version': 1, 'name': 'knee', 'labels': {1: 'femur'},\n"
        "            'normalization': 'double'}\n"
        "def double(a):\n"
        "    return (np.asarray(a, dtype=np.float32) * 2)\n"
    )
    dist = tmp_path / "kneeplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kneeplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[pedseg.domains]\nknee = kneeplugin:knee\n\n[pedseg.normalizations]\ndouble = kneeplugin:double\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kneeplugin", raising=False)
    registry = DomainRegistry()
    entry = {e.name: e for e in registry.entries()}["knee"]
    assert entry.origin == "plugin (kneeplugin)"
    assert registry.get("knee").normalization == "double"
    np.testing.assert_array_equal(get_normalization("double")(np.ones(3)), np.full(3, 2.0))


def test_unknown_normalization() -> None:
    with pytest.raises(UnknownNameError, match="did you mean|Did you mean"):
        get_normalization("zscor")
