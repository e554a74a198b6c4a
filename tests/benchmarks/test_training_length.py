import math

import numpy as np
import pandas as pd
import pytest

SCRIPT = "genomics/singlecell/training_length.py"  # run by conftest.py's `script` fixture


def test_early_stopping_rule_is_lightnings(script):
    rule = script["early_stopping_epoch"]
    values = [3.0, 2.0, 2.5, 2.0, 1.9, 1.95, 1.96, 1.97]
    # equal to the best is no improvement (min_delta 0, strict "<")
    assert rule(values, patience=2) == 4
    assert rule(values, patience=3) == 8
    assert rule(values, patience=4) is None
    assert rule([1.0, float("nan")], patience=10) == 2


def test_training_length_smoke(script, tmp_path, capsys):
    tables = script["main"](["--smoke", "--verify", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    runs, checks = tables["runs"], tables["checks"]
    assert set(runs["setting"]) == {
        "2 epochs",
        "4 epochs",
        "12 epochs",
        "early stopping (patience 1)",
    }
    # held-out cells never trained on; the model trains on 90 % of the rest
    row = runs.iloc[0]
    assert row["n_fit"] == row["n_cells"] - round(0.15 * row["n_cells"])
    assert row["n_train"] == math.ceil(0.9 * row["n_fit"])
    # passes are epochs x training cells, steps are epochs x mini-batches of 128
    np.testing.assert_array_equal(runs["passes"], runs["epochs"] * runs["n_train"])
    np.testing.assert_array_equal(runs["steps"], runs["epochs"] * math.ceil(row["n_train"] / 128))
    # early stopping (patience 1 at a large learning rate) stops before the longest length,
    # and where train(early_stopping=True) itself stops, with the same weights
    stop = runs.loc[runs["kind"] == "early_stopping", "epochs"].item()
    assert stop < 12
    check = checks.iloc[0]
    assert check["es_real_epochs"] == check["es_emulated_epochs"] == stop
    assert check["es_max_abs_diff"] == 0.0
    # the weights copied after epoch 2 of the long run are those of a fresh 2-epoch run
    assert check["fixed_epochs"] == 2 and check["fixed_max_abs_diff"] == 0.0
    # the validation metric read by the callback is the one in the model's history
    curves = tables["curves"]
    np.testing.assert_allclose(
        curves["masked_nll_validation"], curves["masked_nll_validation_history"], rtol=1e-6
    )
    by_epoch = curves.set_index("epoch")["masked_nll_validation"]
    np.testing.assert_allclose(
        runs.set_index("setting")["masked_nll_validation"],
        by_epoch.loc[runs.set_index("setting")["epochs"]].to_numpy(),
    )
    assert runs["probe"].between(0, 1).all() and runs["recon_mean"].between(-1, 1).all()
    np.testing.assert_allclose(
        runs["recon_mean"], runs[["recon_0.1", "recon_0.3", "recon_0.5"]].mean(axis=1)
    )
    # paired differences against the reference length (the first, 2 epochs, in smoke mode)
    pairs = tables["paired"].set_index("setting")
    probe = runs.set_index("setting")["probe"]
    assert pairs.loc["2 epochs", "d_probe"] == 0.0
    delta = probe["12 epochs"] - probe["2 epochs"]
    assert pairs.loc["12 epochs", "d_probe"] == pytest.approx(delta)
    assert "target on synthetic_tiny" in out and "best probe at" in out
    folder = tmp_path / "smoke"
    pd.testing.assert_frame_equal(
        pd.read_csv(folder / "runs.csv"), runs.reset_index(drop=True), check_dtype=False
    )
    assert (folder / "training_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the tables can be re-made from the CSV files
    again = script["main"](["--smoke", "--from-runs", "--out", str(tmp_path)])
    pd.testing.assert_frame_equal(again["summary"], tables["summary"], check_dtype=False)


@pytest.mark.parametrize(
    "argv",
    [["--heldout", "0.7"], ["--datasets", "pbmc3k"], ["--lengths", "0", "50"], ["--lengths", "30"]],
)
def test_training_length_rejects_bad_input(script, argv, tmp_path):
    with pytest.raises(ValueError):
        script["main"]([*argv, "--out", str(tmp_path)])
