"""The planner's choices for fixed injected step times, plan.json, and TrainConfig arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pedseg.data.fingerprint import Fingerprint, LabelFingerprint
from pedseg.data.label_chain import LabelChain
from pedseg.data.postprocess_rules import choose_postprocess
from pedseg.errors import ConfigError, OutputExistsError, PlanError
from pedseg.planning import choices
from pedseg.planning.choices import PlanOptions, costs_of
from pedseg.planning.plan import Plan, make_plan, read_plan, train_kwargs, write_plan
from pedseg.training.config import TrainConfig
from pedseg.training.timing import StepSpec

HOUR = 3600.0


def _label(label_id: int, name: str, fraction: float, majors: tuple[int, ...] = (1, 1, 1)) -> Any:
    return LabelFingerprint(
        label_id=label_id,
        name=name,
        cases=len(majors),
        voxels_median=5000.0,
        volume_mm3_median=4000.0,
        bbox_mm_median=(30.0, 20.0, 25.0),
        components=tuple(m + 1 for m in majors),
        major_components=majors,
        smallest_major_mm3=1200.0,
        largest_minor_mm3=3.0,
        min_extent_fraction=fraction,
    )


def _fingerprint(domain: str, labels: tuple[LabelFingerprint, ...], **changes: Any) -> Fingerprint:
    values: dict[str, Any] = {
        "domain": domain,
        "descriptor_hash": "d" * 64,
        "content_key": f"key-{domain}",
        "num_cases": 10,
        "total_slices": 400,
        "slices_per_case": (40.0, 31.0, 50.0),
        "slice_axes": (2,),
        "spacing_median": (0.9, 0.9, 5.2),
        "spacing_min": (0.9, 0.9, 5.2),
        "spacing_max": (0.9, 0.9, 5.2),
        "in_plane_median": (384.0, 384.0),
        "in_plane_min": (384.0, 384.0),
        "in_plane_max": (384.0, 384.0),
        "in_plane_spacing_median": (0.9, 0.9),
        "foreground_intensity": (10.0, 200.0, 900.0),
        "image_intensity": (0.0, 50.0, 800.0),
        "labels": labels,
        "build_seconds": 30.0,
    }
    values.update(changes)
    return Fingerprint(**values)


ANKLE = _fingerprint(
    "ankle",
    (_label(1, "calcaneus", 0.2), _label(2, "talus", 0.0625), _label(3, "tibia", 0.15)),
)
PELVIS = _fingerprint(
    "pelvis",
    (_label(1, "femur", 0.06, (2, 2, 1)), _label(2, "ilium", 0.08, (2, 2, 2))),
)
SPINE = _fingerprint(
    "spine",
    tuple(_label(i, f"L{i}", 0.032) for i in range(1, 6)),
    in_plane_median=(224.0, 224.0),
    total_slices=24 * 77,
    num_cases=24,
)


def device(seconds_per_unit: float, overhead: float, *, bf16: float = 1.0) -> Callable[..., float]:
    """A fake device: step time grows with the candidate's relative cost; records its calls."""
    calls: list[StepSpec] = []

    def timer(spec: StepSpec) -> float:
        calls.append(spec)
        speed = bf16 if spec.precision == "bf16" else 1.0
        return overhead + seconds_per_unit * spec.relative_cost() * speed

    timer.calls = calls  # type: ignore[attr-defined]
    return timer


FAST_GPU = device(2e-12, 0.01, bf16=0.5)
SLOW_CPU = device(1.3e-9, 0.03, bf16=0.6)


def test_image_size_is_the_smallest_that_resolves_every_label() -> None:
    plan = make_plan([ANKLE], budget_s=10 * HOUR, device="cuda", timer=FAST_GPU)
    assert plan.image_size == 128  # talus: 0.0625 x 96 = 6 px, x 128 = 8 px
    reason = dict(plan.reasons)["image size"]
    assert (
        reason
        == "talus (ankle) is 6.0 px wide at 96² (< 8): image size 128 (talus (ankle): 8.0 px)"
    )


def test_image_size_is_capped_by_the_data() -> None:
    tiny = _fingerprint("tiny", (_label(1, "a", 0.01),), in_plane_median=(150.0, 150.0))
    size, reason = choices.choose_image_size([tiny], PlanOptions())
    assert size == 128 and "caps the image size at 128" in reason


def test_a_fast_device_gets_the_papers_model() -> None:
    timer = device(2e-12, 0.01, bf16=0.5)
    plan = make_plan([PELVIS, SPINE], budget_s=HOUR, device="cuda", timer=timer)
    assert (plan.image_size, plan.base_width, plan.batch_size) == (256, 32, 32)
    assert (plan.amp, plan.channels_last) == ("bf16", True)
    assert plan.total_steps >= 20_000
    assert plan.total_steps == plan.epochs * plan.steps_per_epoch and 10 <= plan.epochs <= 20
    assert 0.85 * HOUR <= plan.expected_seconds <= HOUR
    assert len(timer.calls) <= 4  # type: ignore[attr-defined]


def test_a_slow_two_core_cpu_gets_a_smaller_model_with_enough_steps() -> None:
    timer = device(1.3e-9, 0.03, bf16=0.6)
    plan = make_plan([PELVIS, SPINE], budget_s=HOUR, device="cpu", timer=timer)
    assert plan.image_size == 256  # the labels ask for it, and width 8 fits at 256²
    assert (plan.base_width, plan.batch_size) == (16, 16)
    assert plan.total_steps >= 1500
    assert plan.expected_seconds <= HOUR
    assert plan.amp == "bf16"
    model = dict(plan.reasons)["model"]
    assert "the largest leaving >= 1500 steps" in model
    measured = {s.key() for s in timer.calls}  # type: ignore[attr-defined]
    assert not any("|w32|" in key and "|256|" in key for key in measured)  # predicted, skipped


def test_with_too_little_time_the_cheapest_model_is_taken_and_the_reason_says_so() -> None:
    plan = make_plan([PELVIS, SPINE], budget_s=200.0, device="cpu", timer=SLOW_CPU)
    assert (plan.image_size, plan.base_width, plan.batch_size) == (96, 8, 16)
    reasons = dict(plan.reasons)
    assert "below the 1500 wanted" in reasons["steps"]
    assert reasons["image size"] == (
        "the labels want 256², but no model there leaves 1500 steps in the budget: image size 96 "
        "(L1 (spine) is 3.1 px wide there)"
    )


def test_a_budget_the_overheads_use_up_is_refused() -> None:
    with pytest.raises(PlanError, match="used up before the first step") as info:
        make_plan([PELVIS, SPINE], budget_s=60.0, device="cpu", timer=SLOW_CPU)
    assert "\n" not in str(info.value)


def test_the_fastest_measured_precision_is_chosen() -> None:
    fp32_faster = device(1.3e-9, 0.03, bf16=3.0)
    plan = make_plan([ANKLE], budget_s=HOUR, device="cpu", timer=fp32_faster)
    assert plan.amp == "off"
    assert dict(plan.reasons)["precision"].startswith("fp32")


def test_explicit_options_override_the_plan() -> None:
    fixed = {"base_width": 32, "batch_size": 16, "image_size": (160, 160), "lr": 3e-4}
    plan = make_plan([PELVIS], budget_s=HOUR, device="cpu", timer=SLOW_CPU, overrides=fixed)
    assert (plan.image_size, plan.base_width, plan.batch_size, plan.lr) == (160, 32, 16, 3e-4)
    assert dict(plan.reasons)["image size"] == "160 (given)"
    steps = make_plan(
        [PELVIS],
        budget_s=HOUR,
        device="cpu",
        timer=SLOW_CPU,
        overrides={"epochs": 4, "steps_per_epoch": 50, "schedule": "constant", "amp": "off"},
    )
    assert (steps.epochs, steps.steps_per_epoch, steps.total_steps) == (4, 50, 200)
    assert steps.schedule == "constant" and steps.amp == "off"
    with pytest.raises(ConfigError, match="cannot fix 'seed' in a plan"):
        make_plan([PELVIS], budget_s=HOUR, device="cpu", timer=SLOW_CPU, overrides={"seed": 1})
    with pytest.raises(ConfigError, match="square images"):
        make_plan(
            [PELVIS],
            budget_s=HOUR,
            device="cpu",
            timer=SLOW_CPU,
            overrides={"image_size": (128, 96)},
        )


def test_schedule_and_loss() -> None:
    plan = make_plan([ANKLE], budget_s=HOUR, device="cpu", timer=SLOW_CPU)
    assert (plan.schedule, plan.lr, plan.min_lr_ratio, plan.seg_loss) == (
        "cosine",
        1e-3,
        0.01,
        "dice-ce",
    )
    assert plan.warmup_steps == round(0.03 * plan.total_steps)


def test_postprocessing_comes_from_the_training_labels() -> None:
    plan = make_plan([PELVIS], budget_s=HOUR, device="cpu", timer=SLOW_CPU)
    femur = next(p for p in plan.postprocess if p.label == "femur")
    assert (femur.keep_largest, femur.min_volume_mm3) == (2, 600.0)
    assert "1/2 major component(s) per training case" in femur.reason
    absent = _fingerprint("x", (_label(1, "gone", 0.1, ()),))
    assert choose_postprocess([absent])[0].keep_largest == 0


def test_overheads_follow_the_data_and_the_profile_constants() -> None:
    from pedseg.runfolder import profiles

    assert choices.MAX_PROFILE_SLICES == profiles.MAX_PROFILE_SLICES
    assert choices.CROSS_SLICES_PER_CASE == profiles.CROSS_SLICES_PER_CASE
    assert choices.PROFILE_FRACTION == profiles.CENTRAL_FRACTION
    costs = costs_of([PELVIS, SPINE], PlanOptions())
    assert costs.val_slices == 2 * 40 + 5 * 77  # 20 % of the cases held out
    assert costs.fixed_s == pytest.approx(20.0 + 60.0 + 30.0 * 0.8 + 30.0 * 19 / 24)
    assert costs.validation_s(0.3, 16) == pytest.approx(costs.val_slices * 0.3 / 16 / 3)


def test_plan_json_round_trip_and_no_silent_overwrite(tmp_path: Path) -> None:
    plan = make_plan([PELVIS, SPINE], budget_s=HOUR, device="cpu", timer=SLOW_CPU, machine="m")
    path = write_plan(plan, tmp_path / "plan.json")
    assert read_plan(path) == plan
    with pytest.raises(OutputExistsError):
        write_plan(plan, path)
    write_plan(plan, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format=2), "plan.json: format must be 1"),
        (lambda d: d.update(colour="red"), "plan.json has unknown key 'colour'"),
        (lambda d: d.pop("lr"), "plan.json misses key 'lr'"),
        (lambda d: d.update(batch_size="32"), "plan.json: batch_size must be an integer"),
        (lambda d: d.update(schedule="step"), "plan.json: schedule must be one of"),
        (lambda d: d.update(total_steps=7), "plan.json: total_steps is 7, but epochs x"),
        (lambda d: d["postprocess"][0].pop("reason"), "postprocess[0] misses key 'reason'"),
    ],
)
def test_a_bad_plan_file_is_one_line_naming_the_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    plan = make_plan([PELVIS], budget_s=HOUR, device="cpu", timer=SLOW_CPU)
    raw = plan.to_dict()
    change(raw)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(PlanError) as info:
        read_plan(path)
    text = str(info.value)
    assert text.startswith(str(tmp_path)) and message in text and "\n" not in text


def test_unreadable_plan_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read the plan"):
        read_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanError, match="not valid JSON"):
        read_plan(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(PlanError, match="must be a JSON object, got list"):
        read_plan(tmp_path / "list.json")


def test_train_kwargs_build_a_config_and_explicit_options_win() -> None:
    plan = make_plan([PELVIS, SPINE], budget_s=HOUR, device="cpu", timer=SLOW_CPU)
    config = TrainConfig(**train_kwargs(plan, domains=["pelvis", "spine"]))
    assert config.image_size == (plan.image_size, plan.image_size)
    assert (config.base_width, config.batch_size, config.epochs) == (
        plan.base_width,
        plan.batch_size,
        plan.epochs,
    )
    assert (config.schedule, config.warmup_steps, config.min_lr_ratio) == (
        "cosine",
        plan.warmup_steps,
        0.01,
    )
    assert config.epochs * (config.steps_per_epoch or 0) == plan.total_steps
    explicit = {"lr": 5e-4, "epochs": 3, "seed": 7, "seg_loss": "ce"}
    mine = TrainConfig(**train_kwargs(plan, domains=["spine", "pelvis"], explicit=explicit))
    assert (mine.lr, mine.epochs, mine.seed, mine.seg_loss) == (5e-4, 3, 7, "ce")
    assert mine.domains == ("spine", "pelvis")
    with pytest.raises(PlanError, match="made for domains pelvis, spine, not ankle"):
        train_kwargs(plan, domains=["ankle"])


@pytest.mark.parametrize(
    ("budget", "device_name", "match"),
    [(0.0, "cpu", "positive number of seconds"), (HOUR, "tpu", "cpu or cuda")],
)
def test_bad_inputs(budget: float, device_name: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_plan([PELVIS], budget_s=budget, device=device_name, timer=SLOW_CPU)
    with pytest.raises(PlanError, match="at least one domain"):
        make_plan([], budget_s=HOUR, device="cpu", timer=SLOW_CPU)


def test_plan_is_frozen() -> None:
    plan = make_plan([ANKLE], budget_s=HOUR, device="cpu", timer=SLOW_CPU)
    with pytest.raises(AttributeError):
        plan.epochs = 3  # type: ignore[misc]
    assert isinstance(plan, Plan)


def test_the_plan_says_which_labels_are_renumbered_as_a_chain() -> None:
    chain = LabelChain(
        ("L1", "L2", "L3", "L4", "L5"), 0, 36.0, 34.0, 38_000.0, 6_000.0, "L1-L5 ..."
    )
    spine = replace(SPINE, label_chain=chain)
    plan = make_plan([PELVIS, spine], budget_s=HOUR, device="cuda", timer=FAST_GPU)
    reasons = dict(plan.reasons)
    assert reasons["label chain of spine"] == "L1-L5 ..." and "label chain of pelvis" not in reasons
    assert Plan.from_dict(plan.to_dict()).reasons == plan.reasons
