"""``pedseg train`` option checks that need no data (training itself is tested in tests/training)."""

from __future__ import annotations

from tests.cli.conftest import Runner, one_line_error


def test_unknown_seg_loss_is_one_line_naming_the_choices(pedseg: Runner) -> None:
    result = pedseg("train", "--domains", "ankle", "shoulder", "--seg-loss", "dice")
    one_line_error(result)
    assert "seg_loss must be one of ce, dice-ce, got 'dice'" in result.err
