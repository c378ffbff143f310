"""Domain recognition: profiles (stats, storage, staleness), the vote, OOD, and a trained tiny run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, ModelError
from pedseg.inference.recognition import Candidate, Recognizer, recognizer_for
from pedseg.io import read_volume
from pedseg.io.volume import Volume
from pedseg.runfolder import RunLayout
from pedseg.runfolder.index import index_run
from pedseg.runfolder.loading import load_run
from pedseg.runfolder.profiles import (
    DomainProfile,
    central_range,
    load_profiles,
    profile_from_embeddings,
    read_profile,
    write_profile,
)
from tests.conftest_runs import copy_run, single_thread

DOMAINS = ("ankle", "shoulder")
_RUNS: dict[str, Path] = {}


# ------------------------------------------------------------------------------ shared fixtures
def recognition_run(factory: pytest.TempPathFactory) -> Path:
    """A tiny dsl-contrastive run trained long enough (80 steps, ~5 s) to separate the phantoms."""
    if "run" in _RUNS:
        return _RUNS["run"]
    from pedseg.training.config import TrainConfig
    from pedseg.training.loop import train

    base = factory.mktemp("recognition_run")
    synth_dataset(
        base / "ph", domains=DOMAINS, cases=3, seed=0, config=PhantomConfig(shape=(32, 32, 16))
    )
    with pytest.MonkeyPatch.context() as patch, single_thread():
        patch.setenv("PEDSEG_HOME", str(base / "home"))
        patch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
        specs = DomainRegistry(home=base / "home").resolve(
            DOMAINS, data={name: base / "ph" / name for name in DOMAINS}
        )
        config = TrainConfig(
            domains=DOMAINS,
            scheme="dsl-contrastive",
            epochs=1,
            batch_size=8,
            image_size=(32, 32),
            base_width=8,
            depth=3,
            steps_per_epoch=80,
            lr=1e-3,
            lam=1.0,
            device="cpu",
            seed=0,
        )
        train(config, specs, out=base / "run", cache_root=base / "cache")
    _RUNS["run"] = base / "run"
    return _RUNS["run"]


def held_out(factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two unseen phantoms per domain (other seed, other shape than training)."""
    if "held" not in _RUNS:
        root = factory.mktemp("held_out")
        config = PhantomConfig(shape=(40, 40, 20))
        synth_dataset(root, domains=DOMAINS, cases=2, seed=7, config=config)
        _RUNS["held"] = root
    root = _RUNS["held"]
    return {d: sorted((root / d / "imagesTr").glob("*.nii.gz")) for d in DOMAINS}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recognition_run(tmp_path_factory)


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return held_out(tmp_path_factory)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    with single_thread():
        yield


# ------------------------------------------------------------------------------ mechanics
def test_profile_statistics_match_a_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    z = np.abs(rng.normal(size=(50, 6))) + np.array([3.0, 0, 0, 0, 0, 0])
    origin = np.full(6, 0.1, dtype=np.float32)
    profile = profile_from_embeddings("a", z, origin=origin)
    u = z / np.linalg.norm(z, axis=1, keepdims=True) - 0.1
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    centroid = u.mean(axis=0) / np.linalg.norm(u.mean(axis=0))
    d = 1 - u @ centroid
    np.testing.assert_allclose(profile.centroid, centroid, rtol=1e-6)
    assert np.linalg.norm(profile.centroid) == pytest.approx(1.0, abs=1e-6)
    assert profile.mean == pytest.approx(d.mean()) and profile.std == pytest.approx(d.std())
    assert profile.p95 == pytest.approx(np.percentile(d, 95))
    assert profile.p99 == pytest.approx(np.percentile(d, 99)) and profile.n_slices == 50
    np.testing.assert_allclose(profile.distances(z), d / np.percentile(d, 95), rtol=1e-6)


def test_central_range() -> None:
    assert central_range(20) == (2, 18) and central_range(16) == (1, 15)
    assert central_range(3) == (0, 3) and central_range(1) == (0, 1)


def test_profile_file_round_trip_and_staleness(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    profiles = [profile_from_embeddings(n, rng.random((9, 4)) + k) for k, n in enumerate("ab")]
    write_profile(tmp_path, profiles, model_sha256="ab" * 32)
    loaded = read_profile(tmp_path, model_sha256="ab" * 32)
    assert list(loaded) == ["a", "b"]
    for original in profiles:
        again = loaded[original.name]
        np.testing.assert_array_equal(again.centroid, original.centroid)
        assert (again.p95, again.n_slices) == (original.p95, original.n_slices)
    summary = json.loads((tmp_path / "domains.json").read_text())
    assert summary["model_sha256"] == "ab" * 32 and summary["domains"]["b"]["n_slices"] == 9
    assert summary["domains"]["a"]["cross"] == [] and loaded["a"].cross == {}
    crossed = [dataclasses.replace(profiles[0], cross={"b": profiles[1].centroid}), profiles[1]]
    write_profile(tmp_path, crossed, model_sha256="ab" * 32)
    again_a = read_profile(tmp_path, model_sha256="ab" * 32)["a"]
    assert list(again_a.cross) == ["b"]
    np.testing.assert_array_equal(again_a.cross["b"], profiles[1].centroid)
    with pytest.raises(ModelError, match="stale"):
        read_profile(tmp_path, model_sha256="cd" * 32)
    RunLayout(tmp_path).profiles.unlink()
    with pytest.raises(ModelError, match="pass --domain"):
        read_profile(tmp_path, model_sha256="ab" * 32)


def _toy_spec(name: str) -> DomainSpec:
    from pedseg.domains.spec import parse_descriptor

    raw = {
        "schema_version": 1,
        "name": name,
        "description": "toy",
        "modality": "MR",
        "labels": {1: "thing"},
        "normalization": "zscore",
        "slice_axis": 2,
        "image_size": [16, 16],
    }
    return parse_descriptor(raw, source="test")


def _fake_embed(direction: np.ndarray) -> Candidate:
    """An embedder whose z is ``direction`` rotated towards e_0 by the slice's mean intensity."""

    def embed(x: np.ndarray) -> np.ndarray:
        t = x.mean(axis=(1, 2, 3), dtype=np.float64)[:, None]
        return (direction[None] + t * np.eye(len(direction))[0]).astype(np.float32)

    return embed  # type: ignore[return-value]


def test_recognizer_votes_and_flags_far_scans() -> None:
    """Two candidates with the same preprocessing: the slices' embedding decides."""
    dims = 4
    a, b = np.eye(dims)[1], np.eye(dims)[2]
    rng = np.random.default_rng(0)
    profiles = {
        name: profile_from_embeddings(name, center + 0.05 * rng.normal(size=(40, dims)))
        for name, center in (("a", a), ("b", b))
    }
    candidates = [
        Candidate(_toy_spec(n), (16, 16), _fake_embed(np.zeros(dims)), profiles[n]) for n in "ab"
    ]
    volume = _volume(np.zeros((16, 16, 10), dtype=np.float32))
    # Embedding = zeros + mean * e0 -> far from both centroids -> OOD (zscore: mean 0 -> z = 0).
    recognition = Recognizer(candidates).identify(volume)
    assert recognition.ood and recognition.n_slices == 8 and sum(recognition.votes.values()) == 8
    assert "looks like none" in (recognition.warning() or "")
    near_b = [
        Candidate(_toy_spec(n), (16, 16), _fake_embed(b if n == "b" else a * 0.2 + b), profiles[n])
        for n in "ab"
    ]
    found = Recognizer(near_b).identify(volume)
    assert (found.domain, found.confidence, found.ood) == ("b", 1.0, False)
    assert found.distances["b"] < found.distances["a"]
    assert found.warning() is None and "not a" in (found.warning(expected="a") or "")
    entry = found.to_dict(expected="a")
    assert entry["domain"] == "b" and entry["expected"] == "a" and "warning" in entry
    with pytest.raises(ConfigError):
        Recognizer(near_b, threshold=0)


def test_claims_use_the_nearest_centroid_in_the_candidates_own_space() -> None:
    dims = 4
    own, other = np.eye(dims)[1], np.eye(dims)[1] + 0.5 * np.eye(dims)[2]
    profile = profile_from_embeddings(
        "a", own + 0.01 * np.random.default_rng(0).normal(size=(9, 4))
    )
    z = np.stack([own, other, own + 0.2 * np.eye(dims)[2]])
    assert profile.claims(z).all()  # no cross centroid: every slice is claimed
    crossed = dataclasses.replace(profile, cross={"b": other / np.linalg.norm(other)})
    assert crossed.claims(z).tolist() == [True, False, True]
    assert crossed.claims(z, among=["a"]).all()  # b is not a candidate: ignored


def test_cross_centroids_overrule_a_misleading_own_distance() -> None:
    """Scans of b pushed through a's batch norm land within a's spread (the failure seen on real
    pelvis/spine data); a's cross centroid of b takes them back."""
    dims = 4
    a, b = np.eye(dims)[1], np.eye(dims)[2]
    b_in_a = a + 0.3 * np.eye(dims)[3]  # b's scans in a's space: near a, nearer still to c_ab
    rng = np.random.default_rng(0)
    wide_a = profile_from_embeddings("a", a + 0.3 * rng.normal(size=(60, dims)))
    tight_b = profile_from_embeddings("b", b + 0.01 * rng.normal(size=(60, dims)))
    embeds = {"a": _fake_embed(b_in_a), "b": _fake_embed(b + 0.08 * np.eye(dims)[3])}
    volume = _volume(np.zeros((16, 16, 10), dtype=np.float32))

    def decide(profile_a: DomainProfile) -> str:
        profiles = {"a": profile_a, "b": tight_b}
        candidates = [Candidate(_toy_spec(n), (16, 16), embeds[n], profiles[n]) for n in "ab"]
        return Recognizer(candidates, threshold=100).identify(volume).domain

    assert decide(wide_a) == "a"  # own distances alone: b's scan looks like a (wide spread)
    c_ab = b_in_a / np.linalg.norm(b_in_a)
    assert decide(dataclasses.replace(wide_a, cross={"b": c_ab})) == "b"


def _volume(array: np.ndarray) -> Volume:
    from pedseg.io.volume import SourceGeometry

    ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    source = SourceGeometry(array.shape, np.eye(4), ornt, "nifti", None)
    return Volume(array=array, spacing=(1.0, 1.0, 2.0), affine=np.eye(4), source=source)


# ------------------------------------------------------------------------------ trained run
def test_training_writes_profiles_of_the_best_weights(run: Path) -> None:
    card = json.loads((run / "model.json").read_text())
    profiles = read_profile(run, model_sha256=card["model_sha256"])
    assert list(profiles) == list(DOMAINS)
    for profile in profiles.values():
        assert profile.n_slices > 0 and 0 <= profile.mean <= profile.p95 <= profile.p99
        assert profile.source == "training"
    np.testing.assert_array_equal(profiles["ankle"].origin, profiles["shoulder"].origin)
    # Each space holds the other domain's cross centroid (a unit vector unlike its own centroid).
    assert list(profiles["ankle"].cross) == ["shoulder"]
    assert list(profiles["shoulder"].cross) == ["ankle"]
    cross = profiles["ankle"].cross["shoulder"]
    assert np.linalg.norm(cross) == pytest.approx(1.0, abs=1e-5)
    assert float(cross @ profiles["ankle"].centroid) < 0.999
    assert load_profiles(index_run(run))["ankle"].p95 == profiles["ankle"].p95


def test_held_out_phantoms_are_recognised(run: Path, scans: dict[str, list[Path]]) -> None:
    recognizer = recognizer_for(run)
    for domain, paths in scans.items():
        for path in paths:
            recognition = recognizer.identify(read_volume(path))
            assert recognition.domain == domain, (path.name, recognition)
            assert not recognition.ood and recognition.confidence >= 0.6
            assert recognition.warning(expected=domain) is None


def test_the_wrong_domain_is_reported(run: Path, scans: dict[str, list[Path]]) -> None:
    recognition = recognizer_for(run).identify(read_volume(scans["shoulder"][0]))
    entry = recognition.to_dict(expected="ankle")
    assert entry["domain"] == "shoulder" and "not ankle" in entry["warning"]
    assert entry["median_distance"]["ankle"] > entry["median_distance"]["shoulder"]


def test_exported_runs_recognise_with_onnx_as_with_torch(
    run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    """Where every domain has an up-to-date export, the exports embed the scans (no torch):
    the same verdicts, votes and distances as the PyTorch network; a stale export, or
    ``backend="torch"``, falls back to the network."""
    from pedseg.export.onnx import export_run
    from pedseg.inference.recognition import current_exports

    exported = copy_run(run, tmp_path / "exported")
    export_run(load_run(exported))
    assert current_exports(index_run(run)) is None  # the shared run has no exports
    exports = current_exports(index_run(exported))
    assert exports is not None and sorted(exports) == sorted(DOMAINS)
    with_onnx = recognizer_for(exported)
    with_torch = recognizer_for(exported, backend="torch")
    kinds = {type(c.embed).__name__ for c in with_onnx.candidates}
    assert kinds == {"_OnnxEmbedder"}
    assert all(type(c.embed).__name__ == "function" for c in with_torch.candidates)
    for path in [*scans["ankle"], *scans["shoulder"]]:
        volume = read_volume(path)
        a, b = with_onnx.identify(volume), with_torch.identify(volume)
        assert (a.domain, a.votes, a.ood) == (b.domain, b.votes, b.ood)
        for name, distance in b.distances.items():
            assert a.distances[name] == pytest.approx(distance, abs=1e-4)
    (exported / "onnx" / "ankle.onnx").write_bytes(b"not a graph")  # unreadable: PyTorch embeds
    assert current_exports(index_run(exported)) is None
    assert recognizer_for(exported).identify(read_volume(scans["ankle"][0])).domain == "ankle"
    export_run(load_run(exported), overwrite=True)
    card = json.loads((exported / "model.json").read_text())
    card["model_sha256"] = "0" * 64  # the weights changed since the export (as far as it knows)
    (exported / "model.json").write_text(json.dumps(card))
    assert current_exports(index_run(exported)) is None


def test_predicting_from_an_exported_run_imports_no_torch(
    run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    """Segmenting, checking the domain and post-processing from a run with ONNX exports runs in a
    process that never imports torch (which costs seconds before the first case)."""
    import subprocess
    import sys

    from pedseg.export.onnx import export_run

    exported = copy_run(run, tmp_path / "exported")
    export_run(load_run(exported))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pedseg.inference.predictor import open_predictor\n"
        "from pedseg.inference.recognition import recognizer_for\n"
        "from pedseg.io import read_volume\n"
        f"run, scan = Path({str(exported)!r}), Path({str(scans['ankle'][0])!r})\n"
        "predictor = open_predictor(run, 'ankle', device='cpu')\n"
        "volume = read_volume(scan)\n"
        "labels = predictor.predict(volume).labels\n"
        "found = recognizer_for(run, device='cpu').identify(volume)\n"
        "assert predictor.backend.name == 'onnx', predictor.backend.name\n"
        "print(found.domain, int(labels.max()), 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ankle", done.stdout.split()[1], "False"]


def test_recognizer_needs_profiles(run: Path, tmp_path: Path) -> None:
    import shutil

    old = shutil.copytree(run, tmp_path / "old")
    RunLayout(old).profiles.unlink()
    with pytest.raises(ModelError, match="trained before"):
        recognizer_for(old)


def test_extend_carries_the_profiles_and_adds_the_new_domain(run: Path, tmp_path: Path) -> None:
    import dataclasses

    from pedseg.training.extend import ExtendConfig, extend_run

    ankle = DomainRegistry(home=tmp_path / "reg").get("ankle")
    knee = dataclasses.replace(ankle, name="knee", source="<test knee>")
    knee = knee.with_data_root(run.parent / "ph" / "ankle")
    config = ExtendConfig(epochs=1, batch_size=4, steps_per_epoch=2, device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
        out = extend_run(run, knee, config=config, out=tmp_path / "ext").run_dir
    base = load_profiles(index_run(run))
    extended = load_profiles(index_run(out))
    assert list(extended) == [*DOMAINS, "knee"] and extended["knee"].source == "extension"
    for name in DOMAINS:  # frozen shared weights: the old clusters are unchanged, carried
        np.testing.assert_array_equal(extended[name].centroid, base[name].centroid)
        assert extended[name].p95 == base[name].p95
        # ... and gain the new domain's cross centroid; the old ones are kept as they were.
        assert sorted(extended[name].cross) == sorted([*base[name].cross, "knee"])
        for other, centroid in base[name].cross.items():
            np.testing.assert_array_equal(extended[name].cross[other], centroid)
    assert extended["knee"].cross == {}  # the old domains' scans are not at hand


def test_adapt_bn_reprofiles_the_adapted_domain(
    run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    from pedseg.training.adapt import adapt_bn

    out = adapt_bn(run, "ankle", scans["ankle"], out=tmp_path / "adapted", device="cpu").run_dir
    base = load_profiles(index_run(run))
    adapted = load_profiles(index_run(out))
    assert adapted["ankle"].source == "adaptation"
    assert adapted["ankle"].n_slices == 2 * 16  # central 80 % of 2 scans of 20 slices
    np.testing.assert_array_equal(adapted["shoulder"].centroid, base["shoulder"].centroid)
    assert adapted["shoulder"].source == "training"


# ------------------------------------------------------------------- one pass: segment + embed
def test_the_segmentation_pass_gives_the_same_verdict_without_embedding_again(
    run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    """``predict --domain`` checks a scan with the embeddings of its own segmentation pass
    (PyTorch, and the ONNX export's ``embedding`` output): same verdict, votes and distances
    as embedding the picked slices again; that candidate's embedder is not called."""
    from pedseg.export.onnx import export_run
    from pedseg.inference.predictor import open_predictor
    from pedseg.inference.routing import KnownEmbeddings

    export_run(load_run(run), out_dir=tmp_path / "onnx")
    reference = recognizer_for(run)
    for expected in DOMAINS:
        unusable = [
            dataclasses.replace(c, embed=_refuse) if c.spec.name == expected else c
            for c in reference.candidates
        ]
        one_pass = Recognizer(unusable, threshold=reference.threshold)
        for model in (run, tmp_path / "onnx"):
            predictor = open_predictor(model, expected, device="cpu")
            assert predictor.embeds
            for path in [*scans["ankle"], *scans["shoulder"]]:
                volume = read_volume(path)
                prediction = predictor.predict(volume, embed=True)
                assert prediction.embeddings is not None
                known = KnownEmbeddings(
                    predictor.spec, predictor.info.image_size, prediction.embeddings
                )
                before = reference.identify(volume)
                after = one_pass.identify(volume, known={expected: known})
                assert (after.domain, after.votes, after.ood) == (
                    before.domain,
                    before.votes,
                    before.ood,
                )
                for name, distance in before.distances.items():
                    assert after.distances[name] == pytest.approx(distance, abs=1e-4)


def test_known_embeddings_of_another_preparation_are_not_used(
    run: Path, scans: dict[str, list[Path]]
) -> None:
    from pedseg.inference.routing import KnownEmbeddings

    recognizer = recognizer_for(run)
    volume = read_volume(scans["ankle"][0])
    before = recognizer.identify(volume)
    spec = recognizer.candidates[0].spec
    n = volume.shape[2]
    wrong = {  # another image size, or not one row per slice: embedded again instead
        "ankle": KnownEmbeddings(spec, (16, 16), np.zeros((n, 4), np.float32)),
        "shoulder": KnownEmbeddings(spec, (32, 32), np.zeros((n + 1, 4), np.float32)),
    }
    assert recognizer.identify(volume, known=wrong) == before


def _refuse(x: np.ndarray) -> np.ndarray:
    raise AssertionError("embedded again although the segmentation pass gave the embeddings")


def test_batch_with_a_given_domain_checks_each_scan_from_its_segmentation_pass(
    run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    from pedseg.inference.batch import BatchOptions, predict_cases
    from pedseg.inference.predictor import open_predictor
    from pedseg.inference.routing import fixed_domain

    reference = recognizer_for(run)
    unusable = [
        dataclasses.replace(c, embed=_refuse) if c.spec.name == "shoulder" else c
        for c in reference.candidates
    ]
    check = Recognizer(unusable, threshold=reference.threshold)
    predictor = open_predictor(run, "shoulder", device="cpu")
    inputs = [*scans["shoulder"], scans["ankle"][0]]
    result = predict_cases(
        predictor,
        inputs,
        BatchOptions(out=tmp_path / "out"),
        router=fixed_domain("shoulder", check),
    )
    assert [r.status for r in result.results] == ["done"] * 3
    for path, case in zip(inputs, result.results, strict=True):
        assert case.report is not None
        expected = reference.identify(read_volume(path)).to_dict(expected="shoulder")
        entry = case.report["recognition"]
        assert (entry["domain"], entry["votes"]) == (expected["domain"], expected["votes"])
        assert ("warning" in entry) == ("warning" in expected)  # the ankle scan is said
    assert "not shoulder" in result.results[2].report["recognition"]["warning"]  # type: ignore[index]
