"""Execute the tutorial notebooks once per test session (shared by the notebook and docs tests)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).parents[2] / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))


class NotebookRunner:
    """Runs each tutorial at most once, in a scratch folder, and keeps the executed copy."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.executed = workdir / "executed"
        self.executed.mkdir()
        self._results: dict[str, tuple[Path | None, float, BaseException | None]] = {}

    def __call__(self, name: str) -> tuple[Path, float]:
        if name not in self._results:
            self._results[name] = self._execute(name)
        path, seconds, error = self._results[name]
        if error is not None:
            pytest.fail(f"tutorial {name} failed:\n{error}", pytrace=False)
        return path, seconds

    def _execute(self, name: str):
        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.read(TUTORIALS / name, as_version=4)
        cwd = self.workdir / Path(name).stem
        cwd.mkdir()
        client = NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd)}},
        )
        start = time.perf_counter()
        try:
            client.execute()
        except Exception as err:  # the cell's traceback is in the message
            return None, time.perf_counter() - start, err
        seconds = time.perf_counter() - start
        out = self.executed / name
        nbformat.write(nb, out)
        return out, seconds, None

    def all_executed(self) -> Path:
        """Folder holding every tutorial, executed."""
        for name in NOTEBOOKS:
            self(name)
        return self.executed


@pytest.fixture(scope="session")
def run_notebook(tmp_path_factory) -> NotebookRunner:
    runner = NotebookRunner(tmp_path_factory.mktemp("tutorials"))
    yield runner
    shutil.rmtree(runner.workdir, ignore_errors=True)
