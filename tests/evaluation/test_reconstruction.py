import numpy as np
import pytest
import torch

from scr2mae.evaluation import masked_reconstruction_score, r2mae_predictor, scvi_predictor


def _oracle(counts):
    counts = np.asarray(counts, dtype=np.float64)

    def predict(x_masked, mask, rows):
        return torch.as_tensor(counts[rows])  # knows the hidden genes

    return predict


def test_oracle_scores_high_and_masked_input_is_zeroed():
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(2.0, 3.0, (1, 50)), (40, 50))
    seen = {}

    def spy(x_masked, mask, rows):
        seen.setdefault("checked", True)
        assert torch.all(x_masked[mask] == 0)
        assert torch.equal(mask.sum(1), torch.full((len(rows),), round(0.3 * 50)))
        return torch.ones_like(x_masked)

    masked_reconstruction_score(counts, spy, 0.3, batch_size=16)
    assert seen["checked"]
    score = masked_reconstruction_score(counts, _oracle(counts), [0.1, 0.5])
    assert (score > 0.999).all() and list(score.index) == [0.1, 0.5]
    gen = torch.Generator().manual_seed(0)
    noise = masked_reconstruction_score(
        counts, lambda x, m, r: torch.rand(x.shape, generator=gen), 0.5
    )
    assert isinstance(noise, float) and abs(noise) < 0.1  # an uninformed guess scores ~0


def test_masks_depend_only_on_seed():
    counts = np.random.default_rng(1).poisson(3.0, (30, 20))
    masks = []

    def record(x_masked, mask, rows):
        masks.append(mask.clone())
        return torch.rand(x_masked.shape, generator=torch.Generator().manual_seed(len(masks)))

    a = masked_reconstruction_score(counts, record, 0.2, seed=5, return_per_cell=True)
    first = torch.cat(masks)
    masks.clear()
    b = masked_reconstruction_score(counts, record, 0.2, seed=5, return_per_cell=True)
    assert torch.equal(first, torch.cat(masks))
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy())
    with pytest.raises(ValueError, match="mask_ratio"):
        masked_reconstruction_score(counts, record, 1.5)
    with pytest.raises(TypeError, match="predict"):
        masked_reconstruction_score(counts, None)


def test_agrees_with_model_score_and_runs_scvi():
    import scvi

    from scr2mae import R2MAEModel
    from scr2mae.data import synthetic_donor_counts

    torch.set_num_threads(1)
    adata = synthetic_donor_counts(n_donors=4, cells_per_donor=40, n_genes=60, seed=0)
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key="donor_id")
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="donor_id")
    scvi.settings.seed = 0
    model = R2MAEModel(adata, n_hidden=16, n_latent=4)
    model.train(max_epochs=2, enable_progress_bar=False)
    idx = np.sort(model.validation_indices)
    ratios = [0.1, 0.3, 0.7]
    expected = model.get_reconstruction_score(indices=idx, mask_ratio=ratios, seed=3)
    got = masked_reconstruction_score(
        adata.layers["counts"][idx], r2mae_predictor(model, adata, idx), ratios, seed=3
    )
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="registered"):
        masked_reconstruction_score(
            adata.layers["counts"][idx].toarray() + 1, r2mae_predictor(model, adata, idx), 0.3
        )

    ref = scvi.model.SCVI(adata, n_hidden=16, n_latent=4)
    ref.train(max_epochs=2, enable_progress_bar=False)
    s = masked_reconstruction_score(
        adata.layers["counts"][idx], scvi_predictor(ref, adata, idx), ratios, seed=3
    )
    assert np.isfinite(s.to_numpy()).all() and (np.abs(s.to_numpy()) <= 1).all()
