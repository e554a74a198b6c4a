import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

DNA = Path(__file__).parents[2] / "benchmarks" / "genomics" / "dna"
sys.path.insert(0, str(DNA))

import _dna_data as data  # noqa: E402
import _dna_metrics as metrics  # noqa: E402
import _dna_model as dmodel  # noqa: E402

torch.set_num_threads(1)


# ---------------------------------------------------------------- loading on a local stand-in


def _standin(tmp_path):
    """A tiny genome MSA (zarr v2, as 89.zarr) and a HF windows dataset with GPN columns."""
    rng = np.random.default_rng(0)
    human = "ACGTacgtNN" + "".join(rng.choice(list("ACGT"), 40))
    other = "".join(rng.choice(list("ACGT-"), 50))
    msa = np.stack(
        [np.frombuffer(human.encode(), np.uint8), np.frombuffer(other.encode(), np.uint8)] * 1
        + [np.frombuffer(human.upper().encode(), np.uint8)],
        axis=1,
    )  # human, species 1, species 2 (= human upper-cased)
    data.write_genome_msa_zarr({"1": msa, "2": msa[::-1].copy()}, tmp_path / "89.zarr")
    (tmp_path / "ds" / "data").mkdir(parents=True)
    win = pd.DataFrame(
        {
            "chrom": ["1", "1"],
            "start": [0, 20],
            "end": [16, 36],
            "strand": ["+", "-"],
            "phastCons": [np.r_[np.ones(8), np.zeros(8)]] * 2,
            "phyloP": [np.r_[np.full(8, 3.0), np.full(8, np.nan)]] * 2,
        }
    )
    win.to_parquet(tmp_path / "ds" / "data" / "train-00000.parquet")
    win.iloc[:1].to_parquet(tmp_path / "ds" / "data" / "validation-00000.parquet")
    return msa


def test_window_loading_on_local_standin(tmp_path):
    msa = _standin(tmp_path)
    ds = data.load_gpn_msa_windows(
        tmp_path / "ds", tmp_path / "89.zarr", "train", cache_dir=tmp_path / "c"
    )
    assert len(ds) == 2 and ds.genome_msa.n_species == 2
    assert sorted(ds.genome_msa.chrom_sizes) == ["1"]  # only the chromosomes of the split
    item = ds[0]
    # human "ACGTacgtNN..." -> tokens of "-ACGT?", case-insensitive, N -> gap (0)
    assert item["input_ids"][:10].tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 0, 0]
    assert item["aux_features"].shape == (16, 2)
    assert item["aux_features"][:, 1].tolist() == data.tokenize(msa[:16, 2]).tolist()
    # soft-masked (lowercase 4..7) x 0.1, x max(phyloP, 1) x (0.1 + smoothed phastCons)
    w = item["loss_weight"].numpy()
    np.testing.assert_allclose(w[:4], 3.0 * 1.1, rtol=1e-6)
    np.testing.assert_allclose(w[4:8], 0.1 * 3.0 * 1.1, rtol=1e-6)
    np.testing.assert_allclose(w[8:11], 1.1, rtol=1e-6)  # smoothing reaches 3 bp further
    np.testing.assert_allclose(w[11:], 0.1, rtol=1e-6)
    np.testing.assert_array_equal(item["flip_p"].numpy(), np.r_[np.zeros(11), np.full(5, 0.5)])
    # the minus-strand window is the reverse complement of the plus-strand slice
    rev = ds[1]
    fwd = data.tokenize(msa[20:36, 0])
    comp = {1: 4, 2: 3, 3: 2, 4: 1, 0: 0}
    assert rev["input_ids"].tolist() == [comp[t] for t in fwd[::-1]]
    batch = data.collate_windows([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 16) and batch["aux_features"].shape == (2, 16, 2)


def test_genome_msa_pads_and_validates(tmp_path):
    msa = _standin(tmp_path)
    g = data.GenomeMSA(tmp_path / "89.zarr")
    win = g.get_msa("1", -3, 2)
    assert win[:3].tobytes() == b"-" * 9 and np.array_equal(win[3:], msa[:2])
    with pytest.raises(ValueError, match="chromosome"):
        g.get_msa("X", 0, 5)
    with pytest.raises(ValueError, match="path"):
        data.GenomeMSA(tmp_path / "missing.zarr")
    with pytest.raises(ValueError, match="lacks column"):
        data.MSAWindowDataset(pd.DataFrame({"chrom": ["1"]}), g)


def test_synthetic_generator_makes_conservation_visible():
    g = data.simulate_genome_msa(data.SyntheticMSAConfig(chrom_length=20000, n_species=8))
    m, c = g["msa"]["3"], g["constrained"]["3"]
    assert m.shape == (20000, 9) and c.any() and (~c).any()
    agree = (m[:, 1:] == m[:, [0]]).mean(1)
    assert agree[c].mean() > 0.8 and agree[~c].mean() < 0.6
    v = data.make_variant_sets(g, "3", n_missense=50, n_regulatory_pathogenic=5)
    human = m[v["pos"].to_numpy() - 1, 0]
    assert [chr(b) for b in human] == v["ref"].tolist() and (v["ref"] != v["alt"]).all()
    is_con = c[v["pos"].to_numpy() - 1]
    np.testing.assert_array_equal(is_con, v["label"].to_numpy() == 1)
    assert set(v["class"]) == {"missense", "5'UTR", "3'UTR", "ncRNA"}


# ---------------------------------------------------------------- masking


def test_masks_touch_only_human_acgt_positions():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (64, 128), generator=gen)  # includes gaps (0)
    for mode in ("exact", "bernoulli"):
        mask = dmodel.human_mask(ids, torch.tensor([0.9]), mode=mode, generator=gen)
        assert mask.any() and not mask[ids == 0].any()
        assert mask.shape == ids.shape  # (B, L): never the auxiliary species
    exact = dmodel.human_mask(ids, torch.tensor([0.3]), mode="exact", generator=gen)
    n_acgt = (ids > 0).sum(1).float()
    np.testing.assert_array_equal(exact.sum(1).numpy(), torch.floor(0.3 * n_acgt + 0.5).numpy())
    corrupted = dmodel.corrupt(ids, exact, generator=gen)
    assert torch.equal(corrupted[~exact], ids[~exact])
    frac_mask_token = (corrupted[exact] == data.MASK_ID).float().mean()
    assert 0.75 < frac_mask_token < 0.85


@pytest.mark.parametrize(
    ("name", "lo", "hi", "mean"),
    [
        ("GPN-MSA (MLM)", 0.15, 0.15, 0.15),
        ("MR 5%", 0.05, 0.05, 0.05),
        ("MR 30%", 0.30, 0.30, 0.30),
        ("MDLM", 0.0, 1.0, 0.5),
        ("R2MAE", 0.05, 0.30, 0.175),
        ("CL-MAE", 0.15, 0.15, 0.15),
        ("R2MAE + CL", 0.05, 0.30, 0.175),
    ],
)
def test_each_scheme_draws_the_promised_ratios(name, lo, hi, mean):
    scheme = dmodel.build_scheme(name, total_steps=1000, hidden_size=16, warmup_steps=10)
    gen = torch.Generator().manual_seed(1)
    r = torch.stack([scheme.draw(s, generator=gen, device="cpu")[0][0] for s in range(2000)])
    assert r.min() >= lo - 1e-6 and r.max() <= hi + 1e-6
    assert abs(float(r.mean()) - mean) < 0.02
    if name == "R2MAE + CL":  # ten discrete ratios spanning the range
        assert len(torch.unique(r)) == 10


def test_decaying_schemes_follow_their_centre():
    gen = torch.Generator().manual_seed(2)
    dyn = dmodel.build_scheme("Dynamic MR", total_steps=100, hidden_size=16)
    assert float(dyn.draw(0, generator=gen, device="cpu")[0]) == pytest.approx(0.30)
    assert float(dyn.draw(50, generator=gen, device="cpu")[0]) == pytest.approx(0.175)
    assert float(dyn.draw(100, generator=gen, device="cpu")[0]) == pytest.approx(0.05)
    both = dmodel.build_scheme("R2MAE + Dynamic MR", total_steps=100, hidden_size=16)
    late = torch.stack([both.draw(100, generator=gen, device="cpu")[0][0] for _ in range(500)])
    assert late.min() >= 0.0 and late.max() <= 0.10 and abs(float(late.mean()) - 0.05) < 0.01


def test_curriculum_is_tokenwise_and_frozen_during_warmup():
    torch.manual_seed(0)
    model = dmodel.build_gpn_msa_model(
        2, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, dropout=0.0
    )
    scheme = dmodel.build_scheme("R2MAE + CL", total_steps=20, hidden_size=32, warmup_steps=5)
    gen = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1, 5, (4, 128), generator=gen),
        "aux_features": torch.randint(0, 5, (4, 128, 2), generator=gen),
        "loss_weight": torch.ones(4, 128),
    }
    task = dmodel.MaskedLMTask(model, scheme)
    for step, expect_grad in ((2, False), (6, True)):  # ramp +1 -> -1 is 0 at 10
        task.zero_grad(set_to_none=True)
        task(batch, torch.tensor(float(step)), gen)["loss"].backward()
        grads = [p.grad for p in scheme.curriculum.generator_parameters()]
        has = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert has == expect_grad
    w = scheme.curriculum.weight_generator(torch.randn(3, 128, 32))
    assert w.shape == (3, 128, 10)
    np.testing.assert_allclose(w.mean(1).detach().numpy(), 1.0, rtol=1e-4)


# ---------------------------------------------------------------- LLR scoring


class _CountingModel:
    """Stand-in 'MLM': logits of base b at each position = log(1 + #species showing b)."""

    training = False

    def __init__(self):
        self.model = self
        self.cls = torch.nn.Identity()

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, input_ids=None, aux_features=None):
        counts = torch.nn.functional.one_hot(aux_features.long(), 6).sum(2).float()
        return type("Out", (), {"last_hidden_state": torch.log1p(counts)})()


def _variant_genome(tmp_path):
    msa = np.frombuffer(b"ACGT" * 40, np.uint8).reshape(40, 4).copy()
    msa[:, 0] = np.frombuffer(b"ACGTTGCA" * 5, np.uint8)
    data.write_genome_msa_zarr({"1": msa}, tmp_path / "g.zarr")
    variants = pd.DataFrame(
        {"chrom": ["1", "1"], "pos": [10, 21], "ref": ["C", "T"], "alt": ["G", "A"]}
    )
    return data.GenomeMSA(tmp_path / "g.zarr"), msa, variants


def test_llr_matches_hand_computation(tmp_path):
    genome, msa, variants = _variant_genome(tmp_path)
    llr = dmodel.score_variants(_CountingModel(), genome, variants, window_size=8)
    expected = []
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    for pos, ref, alt in zip(variants["pos"], variants["ref"], variants["alt"], strict=True):
        col = [chr(b) for b in msa[pos - 1, 1:]]
        fwd = np.log1p(col.count(alt)) - np.log1p(col.count(ref))
        ccol = [comp[b] for b in col]  # reverse strand: complemented bases and alleles
        rev = np.log1p(ccol.count(comp[alt])) - np.log1p(ccol.count(comp[ref]))
        expected.append(0.5 * (fwd + rev))
    np.testing.assert_allclose(llr, expected, rtol=1e-6)


def test_llr_of_tiny_gpn_model_equals_manual_log_softmax(tmp_path):
    genome, _msa, variants = _variant_genome(tmp_path)
    torch.manual_seed(0)
    model = dmodel.build_gpn_msa_model(
        3, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, dropout=0.0
    )
    llr = dmodel.score_variants(model, genome, variants, window_size=8)
    manual = []
    for pos, ref, alt in zip(variants["pos"], variants["ref"], variants["alt"], strict=True):
        parts = []
        for strand, centre in (("+", 4), ("-", 3)):
            win = genome.get_msa("1", pos - 1 - 4, pos - 1 + 4, strand)
            tok = torch.from_numpy(data.tokenize(win).astype(np.int64))
            ids = tok[:, 0].clone()
            ids[centre] = data.MASK_ID
            with torch.no_grad():
                logp = model(input_ids=ids[None], aux_features=tok[None, :, 1:]).logits
            logp = torch.log_softmax(logp[0, centre], -1)
            if strand == "-":  # complement: A<->T, C<->G are mirror images in "-ACGT?"
                ref, alt = (data.VOCAB[5 - data.VOCAB.index(b)] for b in (ref, alt))
            r, a = ref, alt
            parts.append(float(logp[data.VOCAB.index(a)] - logp[data.VOCAB.index(r)]))
        manual.append(np.mean(parts))
    np.testing.assert_allclose(llr, manual, rtol=1e-5, atol=1e-6)
    bad = variants.assign(ref=["A", "G"])
    with pytest.raises(ValueError, match="does not match"):
        dmodel.score_variants(model, genome, bad, window_size=8)


# ---------------------------------------------------------------- metrics


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    for n_pos, n_neg, ties in ((50, 50, False), (20, 3000, True), (7, 500, False)):
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(int)
        s = rng.normal(size=n_pos + n_neg) + 1.5 * y
        if ties:
            s = np.round(s, 1)
        assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert metrics.auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        for f in (0.001, 0.01, 0.2):
            assert metrics.partial_auroc(y, s, f) == pytest.approx(
                roc_auc_score(y, s, max_fpr=f), abs=1e-10
            )
    y = np.r_[np.ones(5), np.zeros(5)].astype(int)
    assert metrics.partial_auroc(y, np.r_[np.ones(5), np.zeros(5)], 0.001) == 1.0
    assert metrics.partial_auroc(y, np.r_[np.ones(5), np.zeros(5)], 0.1, mcclish=False) == 0.1
    with pytest.raises(ValueError, match="both classes"):
        metrics.auroc(np.ones(3), np.arange(3.0))
    with pytest.raises(ValueError, match="max_fpr"):
        metrics.partial_auroc(y, np.arange(10.0), 0.0)


def test_table3_metrics_per_class():
    v = pd.DataFrame(
        {
            "label": [1, 0, 1, 0, 1, 0, 0, 1, 0],
            "class": ["missense"] * 2 + ["5'UTR"] * 2 + ["3'UTR"] * 3 + ["ncRNA"] * 2,
            "set": ["missense"] * 2 + ["regulatory"] * 7,
        }
    )
    llr = np.array([-5.0, 0.0, -3.0, 1.0, -1.0, 0.5, -2.0, -4.0, 0.1])
    out = metrics.table3_metrics(v, llr)
    assert out["missense AUROC"] == 1.0 and out["5'UTR AUPRC"] == 1.0
    assert out["3'UTR AUPRC"] == pytest.approx(average_precision_score([1, 0, 0], [1, -0.5, 2]))
    reg = v["set"] == "regulatory"
    assert out["regulatory AUPRC"] == pytest.approx(
        average_precision_score(v["label"][reg], -llr[reg])
    )


# ---------------------------------------------------------------- the script


def test_train_script_smoke(tmp_path):
    main = runpy.run_path(str(DNA / "train.py"), run_name="dna_train")["main"]
    schemes = ["GPN-MSA (MLM)", "R2MAE + CL"]
    table = main(["--smoke", "--out", str(tmp_path), "--schemes", *schemes])
    assert list(table.index) == schemes
    for col in ["missense AUROC", "regulatory pAUROC", "ncRNA AUPRC"]:
        values = table[col].to_numpy(dtype=float)
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert table.loc["GPN-MSA (MLM)", "mean_mask_ratio"] == pytest.approx(0.15)
    assert 0.05 <= table.loc["R2MAE + CL", "mean_mask_ratio"] <= 0.30
    assert (table["val_loss@15%"] < np.log(6)).all()  # below a uniform guess over 6 tokens
    for name in ("table3.csv", "table3.md", "table3.png", "data/msa.zarr"):
        assert (tmp_path / name).exists()
    with pytest.raises(SystemExit):
        main(["--smoke", "--schemes", "nope"])
