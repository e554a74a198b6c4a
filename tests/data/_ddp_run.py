"""Two-process DDP training on CPU (gloo) with the fast path; run by test_ddp.py.

    python _ddp_run.py OUT_DIR

Every rank writes the cell indices of its training mini-batches, per epoch, and the model's
parameters after training to ``OUT_DIR/rank<k>.json``.
"""

import json
import sys
import warnings

import numpy as np
import scvi
from anndata import AnnData
from lightning.pytorch.callbacks import Callback
from scipy import sparse
from scvi import REGISTRY_KEYS

from scr2mae import R2MAEModel


class RecordCells(Callback):
    def __init__(self):
        self.epochs = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        cells = batch[REGISTRY_KEYS.INDICES_KEY].tolist()
        self.epochs.setdefault(trainer.current_epoch, []).extend(cells)


def main(out_dir: str) -> None:
    warnings.filterwarnings("ignore")
    scvi.settings.seed = 0
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.5, (101, 20)).astype(np.float32)
    counts[:, 0] += 1
    adata = AnnData(X=sparse.csr_matrix(counts))
    adata.obs["donor"] = [f"d{i % 3}" for i in range(101)]
    R2MAEModel.setup_anndata(adata, batch_key="donor")
    model = R2MAEModel(adata, n_hidden=16, n_latent=4, mask_strategy="dynamic")
    record = RecordCells()
    model.train(
        max_epochs=2,
        batch_size=8,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        callbacks=[record],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    rank = model.trainer.global_rank
    out = {
        "rank": rank,
        "world_size": model.trainer.world_size,
        "train_idx": np.asarray(model.train_indices).tolist(),
        "epochs": {str(k): v for k, v in record.epochs.items()},
        "global_step": int(model.trainer.global_step),
        "total_steps": model.module.masker.schedule.total_steps,
        "first_weight": model.module.encoder_out.weight.detach().ravel()[:5].tolist(),
    }
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
