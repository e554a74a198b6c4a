"""bf16 mixed precision: the masked NB loss stays close to float32 (CPU autocast here)."""

import numpy as np
import scvi
import torch
from scvi import REGISTRY_KEYS

from scr2mae import R2MAEModel
from scr2mae.data._inmemory import CellTensors

#: Tolerance of the bf16 loss relative to float32: 0.5 %. bf16 keeps 8 bits of mantissa (relative
#: step 2^-8 ≈ 0.4 %) in the MLP's activations; the NB likelihood (lgamma) stays in float32, and
#: averaging over the masked entries shrinks the error further (measured here: 2e-5).
BF16_LOSS_RTOL = 5e-3


def _model():
    scvi.settings.seed = 0
    adata = scvi.data.synthetic_iid(batch_size=150, n_genes=80, n_batches=2, n_labels=2)
    R2MAEModel.setup_anndata(adata, batch_key="batch")
    return R2MAEModel(adata, n_hidden=64, n_latent=16)


def test_bf16_autocast_loss_matches_float32_and_likelihood_stays_float32():
    model = _model()
    model.train(max_epochs=2, batch_size=50, enable_progress_bar=False)
    module = model.module.eval()
    tensors = CellTensors(model.adata_manager).gather(torch.arange(100))
    mask = torch.rand(100, 80, generator=torch.Generator().manual_seed(1)) < 0.3
    losses, dtypes = {}, {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled), torch.no_grad():
            inf = module.inference(**module._get_inference_input(tensors), mask=mask)
            gen = module.generative(**module._get_generative_input(tensors, inf))
            nll, _, _ = module.masked_nll(inf, gen)
            losses[name] = module.loss(tensors, inf, gen).loss
            dtypes[name] = (gen["px_scale"].dtype, nll.dtype)
    assert dtypes["bf16"][0] == torch.bfloat16  # the MLP did run in bf16
    assert dtypes["bf16"][1] == torch.float32  # the NB likelihood did not
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=BF16_LOSS_RTOL, atol=0)
    assert losses["bf16"] != losses["fp32"]


def test_training_with_bf16_mixed_precision_runs_and_learns():
    model = _model()
    model.train(max_epochs=4, batch_size=50, precision="bf16-mixed", enable_progress_bar=False)
    losses = model.history["train_loss"].to_numpy(dtype=float).ravel()
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    z = model.get_latent_representation()
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert REGISTRY_KEYS.X_KEY in model.adata_manager.data_registry
