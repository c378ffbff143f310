"""Verification figures of an int8 export: Dice conventions, the two bounds, the message."""

from __future__ import annotations

import numpy as np
import pytest

from pedseg.errors import ModelError
from pedseg.export.int8_check import Verification, check_verification, dice


def test_verification_figures_and_message() -> None:
    a = np.zeros((4, 4, 4), dtype=bool)
    assert dice(a, a) == 1.0
    b = a.copy()
    b[0] = True
    assert dice(a, b) == 0.0 and dice(b, b) == 1.0
    result = Verification(
        cases=("c1", "c2"),
        agreement=(0.99, 0.985),
        dice_fp32={"femur": 0.80, "ilium": 0.70},
        dice_int8={"femur": 0.801, "ilium": 0.694},
    )
    assert result.min_agreement == 0.985 and result.worst_drop == ("ilium", pytest.approx(0.006))
    assert not result.passed
    with pytest.raises(
        ModelError, match=r"largest Dice drop 0\.60 points on ilium \(allowed 0\.5\)"
    ):
        check_verification(result, domain="pelvis")
    ok = Verification(("c1",), (0.981,), {"femur": 0.8}, {"femur": 0.796})
    assert ok.passed
    check_verification(ok, domain="pelvis")
