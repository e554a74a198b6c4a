"""The Lightning training plan of :class:`~scr2mae.R2MAEModel` (run by scvi-tools' TrainRunner)."""

from __future__ import annotations

import torch
from scvi.train import TrainingPlan
from torchmetrics import Metric

__all__ = ["PAPER_OPTIMIZER", "VALIDATION_METRIC", "R2MAETrainingPlan"]

#: Adam settings of the paper (appendix C.8), the defaults of :class:`R2MAETrainingPlan`.
#: Pass other values through ``plan_kwargs`` of :meth:`~scr2mae.R2MAEModel.train`, as in
#: scvi-tools; scvi-tools' own defaults are ``{"weight_decay": 1e-6, "eps": 0.01}``.
PAPER_OPTIMIZER = {"optimizer": "Adam", "lr": 1e-3, "weight_decay": 1e-4, "eps": 1e-8}

#: the validation metric that early stopping and the learning-rate plateau monitor
VALIDATION_METRIC = "masked_nll_validation"

# extra metrics of the module summed over entries rather than averaged over cells
_SUMMED = ("scored_nll_sum", "scored_entries")


class PerEntryMean(Metric):
    """A sum over an epoch divided by the number of entries it covers (the NLL per entry)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("entries", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, total: torch.Tensor, entries: torch.Tensor) -> None:
        self.total += total.float()
        self.entries += entries.float()

    def compute(self) -> torch.Tensor:
        return self.total / self.entries.clamp_min(1.0)


def _fusable(optimizer_cls, params: list) -> bool:
    """Whether torch's fused Adam/AdamW kernel can update ``params`` (one CPU or CUDA device,
    floating point): one pass over each parameter instead of about ten."""
    if optimizer_cls not in (torch.optim.Adam, torch.optim.AdamW) or not params:
        return False
    devices = {p.device for p in params}
    return (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.is_floating_point() for p in params)
    )


class R2MAETrainingPlan(TrainingPlan):
    """scvi-tools training plan with less per-step work and a training-length-aware schedule.

    Differences from :class:`scvi.train.TrainingPlan`:

    * **Defaults** are the paper's Adam settings (:data:`PAPER_OPTIMIZER`); every argument of
      scvi-tools' plan (``lr``, ``optimizer``, ``reduce_lr_on_plateau``, …) is taken.
    * **A validation loss that measures the model**: ``masked_nll_validation``, the NB NLL per
      masked entry at fixed masks (:meth:`scr2mae.masking.Masker.validation`), which early
      stopping and the learning-rate plateau monitor (:data:`VALIDATION_METRIC`).
    * **Epoch metrics, no host read per step** (:meth:`compute_and_log_metrics`):
      ``train_loss``, ``masked_nll_train`` (per masked entry, at the drawn masks),
      ``masked_fraction_train``, ``visible_nll_train``, ``batch_correction_loss_train`` and
      their ``validation`` counterparts; with ``on_step=True`` the step loss is logged every
      ``log_every_n_steps`` steps (a Lightning trainer argument of ``train()``).
    * **Schedule length from Lightning.** A step-dependent masking schedule without
      ``total_steps`` gets ``trainer.estimated_stepping_batches`` when fitting starts, so it
      ends with training whatever data module, batch size or number of devices is used.
    * **Fused optimiser.** ``"Adam"`` and ``"AdamW"`` use torch's fused kernel when every
      parameter is on one CPU or CUDA device (the same update, one pass over each parameter).
    * **Curriculum generator without weight decay**, so that during the warm-up (a zero
      gradient coefficient) Adam leaves it exactly unchanged with no host-side step check.
    """

    def __init__(self, module, **kwargs):
        defaults = {**PAPER_OPTIMIZER, "lr_scheduler_metric": VALIDATION_METRIC}
        super().__init__(module, **{**defaults, **kwargs})
        names = ("masked_nll_train", "masked_nll_validation")
        self.masked_nll_metrics = torch.nn.ModuleDict({name: PerEntryMean() for name in names})

    # ------------------------------------------------------------------ schedule
    def on_fit_start(self) -> None:
        """Give an open-ended masking schedule the number of optimisation steps of this fit."""
        masker = getattr(self.module, "masker", None)
        if masker is not None and masker.schedule.needs_total_steps:
            total = int(self.trainer.estimated_stepping_batches)
            masker.schedule = masker.schedule.with_total_steps(max(1, total))

    # ------------------------------------------------------------------ metrics
    def compute_and_log_metrics(self, loss_output, metrics, mode: str) -> None:
        """Log the loss and the scalar extra metrics as epoch means over cells, and the masked
        NLL per scored entry (:class:`PerEntryMean`): no host read."""
        n = loss_output.n_obs_minibatch
        log = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": self.use_sync_dist}
        name = "train_loss" if mode == "train" else "validation_loss"
        self.log(name, loss_output.loss.detach(), **log)
        extras = loss_output.extra_metrics
        self.masked_nll_metrics[f"masked_nll_{mode}"].update(
            extras["scored_nll_sum"], extras["scored_entries"]
        )
        self.log(f"masked_nll_{mode}", self.masked_nll_metrics[f"masked_nll_{mode}"], **log)
        for key, value in extras.items():
            if key not in _SUMMED and torch.is_tensor(value) and value.dim() == 0:
                self.log(f"{key}_{mode}", value.detach(), **log)

    def training_step(self, batch, batch_idx):
        """One optimisation step."""
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self.compute_and_log_metrics(loss_output, None, "train")
        if self.on_step and self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train_loss_step", loss_output.loss.detach(), on_step=True, on_epoch=False)
        return loss_output.loss

    def validation_step(self, batch, batch_idx):
        """Validation loss of one mini-batch at the fixed validation masks."""
        _, _, loss_output = self.forward(
            batch, loss_kwargs=self.loss_kwargs, inference_kwargs={"masking": "validation"}
        )
        self.compute_and_log_metrics(loss_output, None, "validation")

    def on_train_epoch_start(self) -> None:
        # Lightning keeps the mode submodules had when fitting started; a module that was
        # put in evaluation mode (a loaded model, a scArches query) must still train with
        # masks, dropout and batch statistics
        self.module.train()

    # ------------------------------------------------------------------ optimiser
    def _optimizer_creator_fn(self, optimizer_cls):
        def create(params):
            params = list(params)
            curriculum = getattr(self.module, "curriculum", None)
            kwargs = {"lr": self.lr, "eps": self.eps, "weight_decay": self.weight_decay}
            if _fusable(optimizer_cls, params):
                kwargs["fused"] = True
            if curriculum is None:
                return optimizer_cls(params, **kwargs)
            generator_ids = {id(p) for p in curriculum.generator_parameters()}
            rest = [p for p in params if id(p) not in generator_ids]
            return optimizer_cls([{"params": rest}, curriculum.generator_param_group()], **kwargs)

        return create
