"""The shared argument checks: what passes, what is refused, and the message's shape."""

import math

import numpy as np
import pytest

from zerokv.checks import check_bool, check_choice, check_float, check_int, check_positive_int


@pytest.mark.parametrize("good", [1, 7, np.int64(3)])
def test_positive_int_accepts_ints_and_numpy_ints(good):
    assert check_positive_int("n", good) == int(good)
    assert type(check_positive_int("n", good)) is int


@pytest.mark.parametrize("bad", [0, -1, True, False, 1.0, 2.5, "3", None, np.bool_(True)])
def test_positive_int_refuses_non_ints_bools_and_non_positive(bad):
    with pytest.raises(ValueError, match=rf"^Owner: n={bad!r}; must be a positive int$"):
        check_positive_int("n", bad, owner="Owner")


def test_int_bounds_name_the_range():
    assert check_int("k", 0, low=0) == 0
    with pytest.raises(ValueError, match=r"k=-1; must be an int >= 0 \(0: off\)"):
        check_int("k", -1, low=0, note=" (0: off)")
    with pytest.raises(ValueError, match=r"k=5; must be an int in \[0, 4\]"):
        check_int("k", 5, low=0, high=4)


def test_float_refuses_nan_and_inf_unless_allowed_and_open_bounds():
    assert check_float("x", 0.5, low=0.0, high=1.0) == 0.5
    assert check_float("x", 3, low=0.0) == 3.0
    assert check_float("x", math.inf, allow_inf=True) == math.inf
    for bad in (math.nan, math.inf, -math.inf, "1", None, True):
        with pytest.raises(ValueError, match="must be a finite number"):
            check_float("x", bad)
    with pytest.raises(ValueError, match=r"x=0.0; must be a finite number > 0"):
        check_float("x", 0.0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match=r"x=1.5; must be a finite number >= 0 and <= 1"):
        check_float("x", 1.5, low=0.0, high=1.0)


def test_bool_and_choice():
    assert check_bool("flag", True) is True
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match=rf"flag={bad!r}; must be True or False"):
            check_bool("flag", bad)
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode='c'; allowed: a, b"):
        check_choice("mode", "c", ("a", "b"))
