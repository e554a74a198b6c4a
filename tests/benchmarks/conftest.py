import runpy
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def script(request):
    """The namespace of the benchmark script that the test module names in ``SCRIPT`` (a path
    under ``benchmarks/``), run once per test module (not as ``__main__``)."""
    path = BENCHMARKS / request.module.SCRIPT
    return runpy.run_path(str(path), run_name=path.stem)
