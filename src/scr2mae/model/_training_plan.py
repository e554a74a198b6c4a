"""The Lightning training plan of :class:`~scr2mae.R2MAEModel` (run by scvi-tools' TrainRunner)."""

from __future__ import annotations

import torch
from scvi.train import TrainingPlan
from torchmetrics import MeanMetric

__all__ = ["PAPER_OPTIMIZER", "VALIDATION_METRIC", "R2MAETrainingPlan"]

#: Adam settings of the paper (appendix C.8), the defaults of :class:`R2MAETrainingPlan`.
#: Pass other values through ``plan_kwargs`` of :meth:`~scr2mae.R2MAEModel.train`, as in
#: scvi-tools; scvi-tools' own defaults are ``{"weight_decay": 1e-6, "eps": 0.01}``.
PAPER_OPTIMIZER = {"optimizer": "Adam", "lr": 1e-3, "weight_decay": 1e-4, "eps": 1e-8}

#: the validation metric that early stopping and the learning-rate plateau monitor
VALIDATION_METRIC = "masked_nll_validation"

# extra metrics of the module summed over entries rather than averaged over cells
_SUMMED = ("scored_nll_sum", "scored_entries")


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

    * **Defaults** are the paper's Adam settings (:data:`PAPER_OPTIMIZER`); every
      optimiser argument of scvi-tools' plan (``lr``, ``weight_decay``, ``eps``,
      ``optimizer``, ``reduce_lr_on_plateau``, …) is taken through ``plan_kwargs``.
    * **A validation loss that measures the model.** Validation cells are scored at fixed
      masks (:func:`scr2mae.masking.hashed_mask`: each cell always hides the same genes, at
      one of five ratios spanning the schedule's range), and ``masked_nll_validation`` is the
      mean NB negative log-likelihood per masked entry. Early stopping and the learning-rate
      plateau (``lr_scheduler_metric``) monitor it (:data:`VALIDATION_METRIC`).
    * **Epoch metrics, no host read per step** (:meth:`compute_and_log_metrics`):
      ``train_loss``, ``masked_nll_train`` (per masked entry, at the drawn masks),
      ``masked_fraction_train``, ``visible_nll_train``, ``batch_correction_loss_train`` and
      their ``validation`` counterparts; with ``on_step=True`` the step loss is logged every
      ``log_every_n_steps`` steps (a Lightning trainer argument of ``train()``).
    * **Schedule length from Lightning.** A step-dependent masking schedule without
      ``total_steps`` gets ``trainer.estimated_stepping_batches`` when fitting starts, so it
      ends with training whatever data module, batch size or number of devices is used.
    * **Fused optimiser.** ``"Adam"`` and ``"AdamW"`` use torch's fused kernel when every
      parameter is on one CPU or CUDA device (``fused=True``: the same update, one pass over
      each parameter instead of about ten).
    * **Curriculum generator without weight decay.** The curriculum's warm-up sets the
      generator's gradient coefficient to zero; with no weight decay on its parameter group,
      Adam then leaves the generator exactly unchanged, without any host-side check of the
      step.

    Parameters
    ----------
    module
        The :class:`~scr2mae.R2MAEModule`.
    optimizer, lr, weight_decay, eps
        Adam settings (defaults: :data:`PAPER_OPTIMIZER`).
    **kwargs
        Other arguments of :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module,
        *,
        optimizer: str = PAPER_OPTIMIZER["optimizer"],
        lr: float = PAPER_OPTIMIZER["lr"],
        weight_decay: float = PAPER_OPTIMIZER["weight_decay"],
        eps: float = PAPER_OPTIMIZER["eps"],
        lr_scheduler_metric: str = VALIDATION_METRIC,
        **kwargs,
    ):
        super().__init__(
            module,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            lr_scheduler_metric=lr_scheduler_metric,
            **kwargs,
        )
        self.masked_nll_metrics = torch.nn.ModuleDict(
            {f"masked_nll_{m}": MeanMetric(nan_strategy="disable") for m in ("train", "validation")}
        )

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
        NLL per scored entry (a weighted :class:`torchmetrics.MeanMetric`): no host read."""
        n = loss_output.n_obs_minibatch
        log = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": self.use_sync_dist}
        name = "train_loss" if mode == "train" else "validation_loss"
        self.log(name, loss_output.loss.detach(), **log)
        extras = loss_output.extra_metrics
        entries = extras["scored_entries"]
        mean_nll = extras["scored_nll_sum"] / entries.clamp_min(1.0)
        self.masked_nll_metrics[f"masked_nll_{mode}"].update(mean_nll, entries)
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
