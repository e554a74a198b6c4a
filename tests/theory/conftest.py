"""Shared setup of the theory tests.

The matrices here are small (d <= 400): BLAS and torch threads only add overhead, and on a
2-core machine busy with other work, multithreaded OpenBLAS can slow an eigendecomposition a
hundredfold. The tests therefore run single-threaded (threadpoolctl ships with scikit-learn;
without it only torch is limited).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _single_threaded_linear_algebra():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        limiter = None
    else:
        limiter = threadpool_limits(limits=1, user_api="blas")
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        torch.set_num_threads(previous)
