import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

LANG = Path(__file__).parents[2] / "benchmarks" / "general" / "language"
sys.path.insert(0, str(LANG))
glue = runpy.run_path(str(LANG / "_glue.py"))
roberta = runpy.run_path(str(LANG / "roberta_mlm.py"), run_name="roberta_mlm")


def _sst2_standin(root, n=40, seed=0):
    import datasets

    rng = np.random.default_rng(seed)
    good = ["great", "lovely", "superb", "fine"]
    bad = ["awful", "dull", "poor", "bad"]

    def rows(k):
        labels = rng.integers(0, 2, k)
        words = [rng.choice(good if y else bad) for y in labels]
        return {
            "sentence": [f"the film is {w}" for w in words],
            "label": labels.tolist(),
            "idx": list(range(k)),
        }

    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(rows(n)),
        validation=datasets.Dataset.from_dict(rows(n // 2)),
    )
    dd.save_to_disk(str(root / "sst2"))
    return dd


def test_glue_loader_reads_saved_datasetdict(tmp_path):
    dd = _sst2_standin(tmp_path)
    train, evaluation, spec = glue["load_glue_local"](tmp_path, "sst2")
    assert spec.name == "SST-2" and spec.n_labels == 2 and spec.text_keys == ("sentence",)
    assert len(train) == 40 and len(evaluation) == 20
    assert train["sentence"] == dd["train"]["sentence"]


def test_glue_loader_reads_tsv_files_with_matched_split(tmp_path):
    folder = tmp_path / "mnli"
    folder.mkdir()
    frame = pd.DataFrame(
        {
            "premise": ["a cat sits", "it rains"],
            "hypothesis": ["an animal", "it is dry"],
            "label": [0, 2],
        }
    )
    frame.to_csv(folder / "train.tsv", sep="\t", index=False)
    frame.iloc[::-1].to_csv(folder / "validation_matched.tsv", sep="\t", index=False)
    train, evaluation, spec = glue["load_glue_local"](tmp_path, "mnli")
    assert spec.n_labels == 3
    assert train["hypothesis"] == ["an animal", "it is dry"]
    assert evaluation["label"] == [2, 0]


def test_glue_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="task"):
        glue["load_glue_local"](tmp_path, "cola")
    with pytest.raises(FileNotFoundError):
        glue["load_glue_local"](tmp_path, "qqp")
    (tmp_path / "qnli").mkdir()
    pd.DataFrame({"question": ["q"], "label": [1]}).to_csv(tmp_path / "qnli" / "train.csv")
    pd.DataFrame({"question": ["q"], "label": [1]}).to_csv(tmp_path / "qnli" / "validation.csv")
    with pytest.raises(ValueError, match="sentence"):
        glue["load_glue_local"](tmp_path, "qnli")


def test_tokenizer_trained_on_pydoc_text():
    passages = roberta["pydoc_passages"]()
    assert len(passages) > 1000
    assert len({t for t, _ in passages}) == 79
    texts = [t for _, t in passages[:300]]
    tok = roberta["train_tokenizer"](texts, 500)
    assert len(tok) == 500
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.mask_token_id] == [0, 1, 2, 4]
    enc = tok(texts[0])
    assert enc["input_ids"][0] == 0 and enc["input_ids"][-1] == 2
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == texts[0]
    pair = tok("a b", "c d")["input_ids"]
    assert pair.count(2) == 3  # <s> A </s></s> B </s>


def test_roberta_smoke_with_glue_standin(tmp_path):
    _sst2_standin(tmp_path / "glue")
    table = roberta["main"](
        [
            "--mode",
            "smoke",
            "--device",
            "cpu",
            "--glue-dir",
            str(tmp_path / "glue"),
            "--glue-tasks",
            "sst2",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert list(table.index) == list(roberta["SCHEMES"])
    assert list(table.columns) == ["Doc-topic (8-way)", "SST-2", "Rank"]
    assert ((table.drop(columns="Rank") >= 0) & (table.drop(columns="Rank") <= 100)).all().all()
    # average rank over two tasks of five methods: ranks sum to 15 per task
    assert table["Rank"].sum() == pytest.approx(15.0)
    mlm = pd.read_csv(tmp_path / "out" / "roberta_mlm_masked_accuracy.csv", index_col=0)
    ratio = mlm["mean_train_ratio"]
    assert ratio["MLM default"] == pytest.approx(0.15)
    assert ratio["Fixed MR 0.4"] == pytest.approx(0.4)
    assert 0.15 < ratio["Dynamic MR"] < 0.4  # decays from 0.4 towards 0.15 over the run
    assert 0.15 <= ratio["R2MAE"] < 0.4
    assert ((mlm[["acc@0.15", "acc@0.5"]] >= 0) & (mlm[["acc@0.15", "acc@0.5"]] <= 1)).all().all()
    for name in ("roberta_mlm.md", "roberta_mlm_masked_accuracy.png", "roberta_mlm_downstream.csv"):
        assert (tmp_path / "out" / name).exists()
