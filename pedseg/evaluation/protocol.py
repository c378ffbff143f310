"""Cross-validation fold plans: which cases of each domain train, validate and test in each fold.

Every domain's cases are put in an order by a permutation seeded from ``(seed, domain name)`` (so a
domain's order does not depend on the other domains). In that order:

* ``loo`` (leave one out, the paper's protocol): fold ``i`` tests the ``i``-th case of every domain
  that has more than ``i`` cases, validates on the next case of the order (cyclically) and trains
  on the rest. Domains are iterated together: the number of folds is the largest number of cases;
  a domain with fewer cases stops being tested once each of its cases was tested (it still trains,
  with the ``i mod n``-th case of its order for validation). Each case is tested exactly once.
* ``K``-fold: each domain's order is cut into ``K`` contiguous groups (sizes differ by at most 1);
  fold ``i`` tests group ``i``, validates on the case that follows the group in the order
  (cyclically) and trains on the rest. Each case is tested exactly once.

In one fold a case has one role only. Training needs one validation case and at least one training
case besides the test cases, so ``loo`` needs 3 cases per domain and ``K``-fold ``n - ceil(n/K) >= 2``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pedseg.data.dataset import Case, data_spec_of
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, DatasetError
from pedseg.io.atomic import make_folder, write_text_atomic

__all__ = [
    "CrossvalState",
    "DomainFold",
    "Fold",
    "FoldPlan",
    "fold_data",
    "load_json",
    "parse_folds",
    "plan_folds",
    "save_plan",
]

_PLAN_STREAM = 0xC5F0
PLAN_FORMAT = 1
STATE_FORMAT = 1


@dataclass(frozen=True)
class DomainFold:
    """One domain's case ids in one fold (each sorted)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


@dataclass(frozen=True)
class Fold:
    """Fold ``index`` (from 0): the roles of every domain's cases."""

    index: int
    domains: tuple[tuple[str, DomainFold], ...]

    def domain(self, name: str) -> DomainFold:
        for key, value in self.domains:
            if key == name:
                return value
        raise ConfigError(f"fold {self.index} has no domain {name!r}")

    @property
    def tested_domains(self) -> tuple[str, ...]:
        return tuple(name for name, part in self.domains if part.test)


@dataclass(frozen=True)
class FoldPlan:
    """A whole cross-validation plan (written as ``folds.json``)."""

    method: str  # "loo" or "kfold"
    k: int | None
    seed: int
    folds: tuple[Fold, ...]

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.folds[0].domains) if self.folds else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "method": self.method,
            "k": self.k,
            "seed": self.seed,
            "domains": list(self.domains),
            "folds": {
                str(fold.index): {name: part.to_dict() for name, part in fold.domains}
                for fold in self.folds
            },
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FoldPlan:
        """Inverse of :meth:`to_dict`; a malformed plan raises :class:`ConfigError`."""
        try:
            if raw["format"] != PLAN_FORMAT:
                raise ConfigError(f"fold plan format {raw['format']!r} is not {PLAN_FORMAT}")
            domains = [str(d) for d in raw["domains"]]
            folds = []
            for key, parts in sorted(raw["folds"].items(), key=lambda item: int(item[0])):
                folds.append(
                    Fold(
                        index=int(key),
                        domains=tuple(
                            (
                                name,
                                DomainFold(
                                    train=tuple(parts[name]["train"]),
                                    val=tuple(parts[name]["val"]),
                                    test=tuple(parts[name]["test"]),
                                ),
                            )
                            for name in domains
                        ),
                    )
                )
            k = raw["k"]
            return cls(
                method=str(raw["method"]),
                k=None if k is None else int(k),
                seed=int(raw["seed"]),
                folds=tuple(folds),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"malformed fold plan ({type(error).__name__}: {error})") from None


def parse_folds(text: str | int) -> int | None:
    """``"loo"`` -> ``None`` (leave one out); ``"5"`` -> 5 (K-fold, K >= 2)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        cleaned = str(text).strip().lower()
        if cleaned == "loo":
            return None
        try:
            value = int(cleaned)
        except ValueError:
            raise ConfigError(f"--folds must be 'loo' or an integer >= 2, got {text!r}") from None
    if value < 2:
        raise ConfigError(f"--folds must be 'loo' or an integer >= 2, got {text!r}")
    return value


def _order(case_ids: Sequence[str], *, domain: str, seed: int) -> list[str]:
    ids = sorted(case_ids)
    rng = np.random.Generator(
        np.random.PCG64(
            np.random.SeedSequence([_PLAN_STREAM, seed, zlib.crc32(domain.encode("utf-8"))])
        )
    )
    return [ids[i] for i in rng.permutation(len(ids))]


def _domain_fold(order: Sequence[str], start: int, stop: int) -> DomainFold:
    """Test ``order[start:stop]``, validate on ``order[stop % n]``, train on the rest."""
    n = len(order)
    test = set(order[start:stop])
    val = order[stop % n] if test else order[start % n]
    train = [c for c in order if c not in test and c != val]
    return DomainFold(train=tuple(sorted(train)), val=(val,), test=tuple(sorted(test)))


def _check_cases(cases: Mapping[str, Sequence[str]]) -> None:
    if not cases:
        raise ConfigError("a fold plan needs at least one domain")
    for name, ids in cases.items():
        if len(set(ids)) != len(ids):
            raise DatasetError(f"domain {name!r} lists a case id twice; case ids must be unique")


def plan_folds(
    cases: Mapping[str, Sequence[str]],
    *,
    folds: int | None,
    seed: int,
    max_folds: int | None = None,
) -> FoldPlan:
    """The fold plan of ``cases`` (domain -> case ids, in model order); ``folds=None`` is ``loo``.

    ``max_folds`` keeps only the first folds (a quick look; not every case is then tested).
    """
    _check_cases(cases)
    if max_folds is not None and (isinstance(max_folds, bool) or max_folds < 1):
        raise ConfigError(f"--max-folds must be a positive integer, got {max_folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    orders = {name: _order(ids, domain=name, seed=seed) for name, ids in cases.items()}
    bounds: dict[str, list[tuple[int, int]]] = {}
    if folds is None:
        for name, order in orders.items():
            if len(order) < 3:
                raise DatasetError(
                    f"domain {name!r} has {len(order)} case(s); leave-one-out needs at least 3 "
                    "(one to test, one to validate, one to train); add cases or drop the domain"
                )
        count = max(len(order) for order in orders.values())
        for name, order in orders.items():
            n = len(order)
            bounds[name] = [(i, i + 1) if i < n else (i % n, i % n) for i in range(count)]
    else:
        count = folds
        for name, order in orders.items():
            n = len(order)
            if n < folds or n - math.ceil(n / folds) < 2:
                raise DatasetError(
                    f"domain {name!r} has {n} case(s), too few for {folds}-fold cross-validation "
                    "(each fold needs a test case plus one validation and one training case "
                    "outside the test group); use fewer folds or --folds loo"
                )
            edges = [len(part) for part in np.array_split(np.arange(n), folds)]
            starts = np.concatenate([[0], np.cumsum(edges)]).tolist()
            bounds[name] = [(int(starts[i]), int(starts[i + 1])) for i in range(folds)]
    if max_folds is not None:
        count = min(count, max_folds)
    plan = tuple(
        Fold(
            index=i,
            domains=tuple((name, _domain_fold(orders[name], *bounds[name][i])) for name in cases),
        )
        for i in range(count)
    )
    return FoldPlan(method="loo" if folds is None else "kfold", k=folds, seed=seed, folds=plan)


# ------------------------------------------------------------------------------ files


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file written by pedseg (``None`` when absent)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{path} is unreadable ({error}); delete it or use another --out"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; delete it or use another --out")
    return data


def save_plan(path: Path, plan: FoldPlan) -> None:
    """Write ``plan`` to ``path`` (``folds.json``); a plan already there must agree fold by fold
    (it may have fewer or more folds, e.g. after a change of ``max_folds``)."""
    raw = load_json(path)
    if raw is not None:
        old = FoldPlan.from_dict(raw)
        shared = min(len(old.folds), len(plan.folds))
        same = (old.method, old.k, old.seed) == (plan.method, plan.k, plan.seed)
        if not same or old.folds[:shared] != plan.folds[:shared]:
            raise ConfigError(
                f"{path} holds another fold plan (other cases, --folds or --seed); continue with "
                "the same data and options, or choose another --out"
            )
    write_text_atomic(path, json.dumps(plan.to_dict(), indent=2) + "\n")


def _place(source: Path, dest: Path) -> None:
    """Hard-link (or copy) ``source`` to ``dest`` unless the same file is already there."""
    src = source.resolve()
    stat = src.stat()
    if dest.is_file():
        have = dest.stat()
        if (have.st_size, have.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            return
    make_folder(dest.parent)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, tmp)
    tmp.replace(dest)


def fold_data(
    specs: Sequence[DomainSpec], cases: Mapping[str, Mapping[str, Case]], fold: Fold, root: Path
) -> list[DomainSpec]:
    """Descriptors whose data root ``root/<domain>`` holds only the fold's training and validation
    cases (hard links to the original files, copies where links fail; other files are removed)."""
    out: list[DomainSpec] = []
    for spec in specs:
        data = data_spec_of(spec)
        part = fold.domain(spec.name)
        folder = root / spec.name
        wanted: set[Path] = set()
        for case_id in sorted({*part.train, *part.val}):
            case = cases[spec.name][case_id]
            files = [(case.image, data.images)]
            files += [(case.label, data.labels)] if case.label is not None else []
            for source, sub in files:
                dest = folder / sub / source.name
                _place(source, dest)
                wanted.add(dest)
        for sub in (data.images, data.labels):
            for file in (folder / sub).iterdir():
                if file.is_file() and file not in wanted:
                    file.unlink()
        out.append(spec.with_data_root(folder))
    return out


class CrossvalState:
    """``crossval.json``: the settings and the status of each (method, fold), saved on change."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        raw = load_json(self.path)
        if raw is not None:
            old = raw.get("settings")
            if old != json.loads(json.dumps(settings)):
                changed = _first_difference(old, settings)
                raise ConfigError(
                    f"{self.path} was started with other settings ({changed}); use the same "
                    "options to continue it, or choose another --out"
                )
        self.data: dict[str, Any] = raw or {
            "format": STATE_FORMAT,
            "settings": settings,
            "methods": {},
        }

    def status(self, method: str, fold: int) -> str:
        folds = self.data["methods"].get(method, {}).get("folds", {})
        return str(folds.get(str(fold), {}).get("status", "pending"))

    def set(self, method: str, fold: int, status: str) -> None:
        entry = self.data["methods"].setdefault(method, {"folds": {}})["folds"]
        entry[str(fold)] = {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_text_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def _first_difference(old: Any, new: Mapping[str, Any]) -> str:
    if not isinstance(old, dict):
        return "no settings recorded"
    for key in sorted(set(old) | set(new)):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            for sub in sorted(set(old[key]) | set(new[key])):
                if old[key].get(sub) != new[key].get(sub):
                    return f"{sub} was {old[key].get(sub)}, now {new[key].get(sub)}"
        elif old.get(key) != new.get(key):
            return f"{key} was {old.get(key)}, now {new.get(key)}"
    return "format changed"
