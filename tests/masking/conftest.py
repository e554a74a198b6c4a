"""``SCR2MAE_SYNC_DEBUG=1``: run the masking core under ``torch.cuda.set_sync_debug_mode("error")``.

The masking core must not synchronise the host with the GPU (see DESIGN.md: it runs "without host
synchronisation"). With the variable set and CUDA available, every public function and method of
:mod:`scr2mae.masking` is wrapped here, when pytest loads this file (before the test modules
import those names), so that its body runs with CUDA's sync debug mode at ``"error"``: any
host-device synchronisation inside the masking core (``.item()``, ``bool(tensor)``, a blocking
copy) raises. The mode is restored when the call returns, so the tests' own assertions, which read
values back to the host, still run. Without CUDA nothing is wrapped (CPU tensors never sync).

    SCR2MAE_SYNC_DEBUG=1 python -m pytest tests/masking
"""

from __future__ import annotations

import functools
import inspect
import os

import pytest
import torch

import scr2mae.masking as masking

SYNC_DEBUG = os.environ.get("SCR2MAE_SYNC_DEBUG", "0") not in ("", "0")
#: methods wrapped besides the public ones (``nn.Module`` calls ``forward`` through ``__call__``)
_DUNDER = ("__call__", "forward")


def _erroring_on_sync(fn, set_mode, get_mode):
    """``fn`` run with the sync debug mode at "error", the previous mode restored afterwards."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = get_mode()
        set_mode("error")
        try:
            return fn(*args, **kwargs)
        finally:
            set_mode(previous)

    wrapper.__wrapped_for_sync_debug__ = True
    return wrapper


def wrap_masking_core(namespace, set_mode, get_mode) -> list[str]:
    """Wrap the public callables of ``namespace`` (a module) in place; returns their names.

    Functions are replaced in the module; for classes, the functions defined on the class itself
    (public ones, ``__call__`` and ``forward``) are replaced on the class, so every reference to
    the class sees them. Already wrapped callables are left alone.
    """
    wrapped = []
    for name in namespace.__all__:
        obj = getattr(namespace, name)
        if inspect.isfunction(obj) and not hasattr(obj, "__wrapped_for_sync_debug__"):
            setattr(namespace, name, _erroring_on_sync(obj, set_mode, get_mode))
            wrapped.append(name)
        elif inspect.isclass(obj) and obj.__module__.startswith(namespace.__name__):
            for attr, value in list(vars(obj).items()):
                if (attr.startswith("_") and attr not in _DUNDER) or not inspect.isfunction(value):
                    continue
                if not hasattr(value, "__wrapped_for_sync_debug__"):
                    setattr(obj, attr, _erroring_on_sync(value, set_mode, get_mode))
                    wrapped.append(f"{name}.{attr}")
    return wrapped


WRAPPED: list[str] = []
if SYNC_DEBUG and torch.cuda.is_available():
    WRAPPED = wrap_masking_core(
        masking, torch.cuda.set_sync_debug_mode, torch.cuda.get_sync_debug_mode
    )


def pytest_report_header(config):
    if not SYNC_DEBUG:
        return None
    if WRAPPED:
        return f"SCR2MAE_SYNC_DEBUG: {len(WRAPPED)} masking callables run in sync debug 'error'"
    return "SCR2MAE_SYNC_DEBUG: set, but CUDA is not available: nothing wrapped"


@pytest.fixture
def sync_debug_wrapped() -> list[str]:
    """Names of the masking callables wrapped for ``SCR2MAE_SYNC_DEBUG`` (empty when off)."""
    return WRAPPED
