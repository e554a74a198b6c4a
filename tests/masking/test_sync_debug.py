"""The SCR2MAE_SYNC_DEBUG wrapping of tests/masking/conftest.py, checked with a stand-in mode."""

import runpy
import types
from pathlib import Path

import pytest
import torch

CONFTEST = Path(__file__).with_name("conftest.py")


def _stand_in():
    """A module like scr2mae.masking and a recorder of the sync debug mode."""
    state = {"mode": "default", "seen": []}
    module = types.ModuleType("fake_masking")

    def draw(x):
        state["seen"].append(("draw", state["mode"]))
        if x < 0:
            raise ValueError("negative")
        return x

    class Schedule:
        def sample(self):
            state["seen"].append(("sample", state["mode"]))

        def __call__(self):
            self.sample()

        def _helper(self):
            state["seen"].append(("_helper", state["mode"]))

    Schedule.__module__ = "fake_masking._schedules"
    module.draw, module.Schedule, module.__all__ = draw, Schedule, ["draw", "Schedule"]

    def set_mode(mode):
        state["mode"] = mode

    return module, state, set_mode, lambda: state["mode"]


def test_masking_calls_run_in_error_mode_and_the_mode_is_restored():
    wrap = runpy.run_path(str(CONFTEST))["wrap_masking_core"]
    module, state, set_mode, get_mode = _stand_in()
    names = wrap(module, set_mode, get_mode)
    assert sorted(names) == ["Schedule.__call__", "Schedule.sample", "draw"]
    assert module.draw(2) == 2
    module.Schedule()()
    module.Schedule()._helper()  # private: not wrapped
    assert state["seen"] == [
        ("draw", "error"),
        ("sample", "error"),
        ("_helper", "default"),
    ]
    assert state["mode"] == "default"  # the tests' own checks may read values back
    with pytest.raises(ValueError, match="negative"):
        module.draw(-1)
    assert state["mode"] == "default"  # restored after an exception too
    assert wrap(module, set_mode, get_mode) == []  # wrapping twice changes nothing


def test_nothing_is_wrapped_without_the_variable_or_without_cuda(sync_debug_wrapped):
    import os

    if os.environ.get("SCR2MAE_SYNC_DEBUG", "0") in ("", "0") or not torch.cuda.is_available():
        assert sync_debug_wrapped == []
    else:
        assert "column_mask" in sync_debug_wrapped and "Masker.__call__" in sync_debug_wrapped
