"""GLUE tasks (MNLI, QQP, SST-2, QNLI) from local copies, through Hugging Face ``datasets``.

Two local layouts are understood, per task folder ``DIR/<task>``:

* a ``DatasetDict`` written by ``save_to_disk`` (it holds ``dataset_dict.json``), e.g. after
  ``load_dataset("nyu-mll/glue", "sst2").save_to_disk("DIR/sst2")`` on a machine with network;
* plain files ``train.<ext>`` and ``validation[_matched].<ext>`` with ``ext`` one of ``parquet``,
  ``csv``, ``tsv``, ``json``/``jsonl``, holding the same columns as the hub version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GlueTask:
    """Columns and evaluation split of one GLUE task."""

    name: str
    text_keys: tuple[str, ...]
    n_labels: int
    eval_split: str


GLUE_TASKS = {
    "mnli": GlueTask("MNLI", ("premise", "hypothesis"), 3, "validation_matched"),
    "qqp": GlueTask("QQP", ("question1", "question2"), 2, "validation"),
    "sst2": GlueTask("SST-2", ("sentence",), 2, "validation"),
    "qnli": GlueTask("QNLI", ("question", "sentence"), 2, "validation"),
}
_FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}


def load_glue_local(root: str | Path, task: str):
    """Load one GLUE task from ``root/<task>`` (see the module docstring for the layouts).

    Parameters
    ----------
    root
        Folder holding one sub-folder per task (``mnli``, ``qqp``, ``sst2``, ``qnli``).
    task
        The task key.

    Returns
    -------
    ``(train, evaluation, spec)``: two ``datasets.Dataset`` objects and the :class:`GlueTask`.
    """
    if task not in GLUE_TASKS:
        raise ValueError(f"`task` must be one of {sorted(GLUE_TASKS)}, got {task!r}.")
    import datasets

    spec = GLUE_TASKS[task]
    folder = Path(root) / task
    if not folder.is_dir():
        raise FileNotFoundError(f"no local copy of GLUE {task} at {folder}.")
    if (folder / "dataset_dict.json").exists():
        dd = datasets.load_from_disk(str(folder))
    else:
        files = {}
        for split in ("train", spec.eval_split, "validation"):
            for ext, fmt in _FORMATS.items():
                if (folder / f"{split}{ext}").exists() and split not in files:
                    files[split] = (str(folder / f"{split}{ext}"), fmt, ext)
        if not files:
            raise FileNotFoundError(
                f"{folder} holds neither a saved DatasetDict nor train.* files."
            )
        fmts = {fmt for _, fmt, _ in files.values()}
        if len(fmts) != 1:
            raise ValueError(f"{folder}: mixed file formats {sorted(fmts)}.")
        fmt = fmts.pop()
        kwargs = {"delimiter": "\t"} if any(ext == ".tsv" for *_, ext in files.values()) else {}
        dd = datasets.load_dataset(fmt, data_files={k: v[0] for k, v in files.items()}, **kwargs)
    eval_split = spec.eval_split if spec.eval_split in dd else "validation"
    for split in ("train", eval_split):
        if split not in dd:
            raise ValueError(f"GLUE {task} at {folder} has no {split!r} split (has {list(dd)}).")
        missing = [c for c in (*spec.text_keys, "label") if c not in dd[split].column_names]
        if missing:
            raise ValueError(f"GLUE {task} {split} split lacks columns {missing}.")
    return dd["train"], dd[eval_split], spec
