"""Coverage-guided fuzzing (atheris / libFuzzer) of the volume readers and the descriptor loader.

Not collected by pytest (``test_atheris.py`` runs it briefly, marked slow). By hand::

    PYTHONPATH=$PWD python tests/faults/atheris_fuzz.py nifti -runs=20000
    PYTHONPATH=$PWD python tests/faults/atheris_fuzz.py yaml -max_total_time=60

Targets: ``nifti`` (.nii), ``niigz`` (.nii.gz of the fuzzed bytes), ``mha``, ``nrrd``, ``yaml``.
Each starts from a valid seed; a ``PedsegError`` is the expected outcome for bad input, anything
else (another exception, a crash, a hang past ``-timeout``) is reported by libFuzzer.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pedseg"]):
    from pedseg.domains.registry import normalizations
    from pedseg.domains.spec import parse_descriptor
    from pedseg.domains.yamlio import load_yaml_text
    from pedseg.errors import PedsegError
    from pedseg.io import read_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.faults.test_fuzz_readers import LIMIT, NII, SEEDS
from tests.faults.test_fuzz_yaml import SEED as YAML_SEED

SUFFIX = {"nifti": ".nii", "niigz": ".nii.gz", "mha": ".mha", "nrrd": ".nrrd"}
WORK = Path(tempfile.mkdtemp(prefix="pedseg-atheris-"))


def _volume_target(target: str) -> object:
    path = WORK / f"scan{SUFFIX[target]}"

    def run(data: bytes) -> None:
        path.write_bytes(gzip.compress(data, mtime=0) if target == "niigz" else data)
        with contextlib.suppress(PedsegError):
            read_volume(path, max_bytes=LIMIT)

    return run


def _yaml(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    with contextlib.suppress(PedsegError):
        raw = load_yaml_text(text, source="fuzz.yaml")
        parse_descriptor(raw, source="fuzz.yaml", known_normalizations=normalizations())


def main() -> None:
    logging.disable(logging.CRITICAL)  # readers log qform/sform warnings; keep the output short
    target, args = sys.argv[1], sys.argv[2:]
    seed = YAML_SEED.encode() if target == "yaml" else (NII if target == "niigz" else None)
    if seed is None:
        seed = SEEDS[SUFFIX[target]]
    corpus = WORK / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(seed)
    func = _yaml if target == "yaml" else _volume_target(target)
    if not any(a.startswith("-artifact_prefix=") for a in args):  # crash files: not in the repo
        args.append(f"-artifact_prefix={WORK}/")
    atheris.Setup([sys.argv[0], *args, str(corpus)], func)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
