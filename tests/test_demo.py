import numpy as np
import pytest

from scr2mae.data import pbmc68k_counts
from scr2mae.demo import main, run_demo


def test_pbmc68k_counts_recovers_integer_counts():
    adata = pbmc68k_counts()
    assert adata.shape == (700, 765)
    counts = adata.layers["counts"]
    assert np.issubdtype(counts.dtype, np.integer)
    assert counts.min() >= 0
    # log-normalising the recovered counts with the original totals gives back .X, which
    # scanpy stores rounded to three decimals
    n_counts = adata.obs["n_counts"].to_numpy()[:, None]
    relog = np.log1p(counts.toarray() / n_counts * 1e4)
    np.testing.assert_allclose(relog, adata.X.toarray(), atol=5.1e-4)
    assert "bulk_labels" in adata.obs


def test_demo_reduced_run_writes_table_and_umap(tmp_path):
    table = run_demo(tmp_path, max_epochs=3, n_hidden=32, n_latent=8, n_cells=250, progress=False)
    assert list(table.columns) == ["balanced_accuracy", "macro_f1", "train_seconds"]
    assert len(table) == 3
    assert table["balanced_accuracy"].between(0, 1).all()
    assert table["macro_f1"].between(0, 1).all()
    assert (table["train_seconds"].iloc[1:] > 0).all()
    # better than guessing among the populations even after 3 epochs
    n_classes = 9
    assert table["balanced_accuracy"].min() > 1.5 / n_classes
    png = tmp_path / "umap_r2mae.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert (tmp_path / "demo_results.md").read_text().count("|") > 10


@pytest.mark.parametrize("bad", [["--max-epochs", "x"]])
def test_demo_cli_rejects_bad_arguments(bad):
    with pytest.raises(SystemExit):
        main(bad)
