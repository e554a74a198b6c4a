"""The Lightning training plan of :class:`~scr2mae.R2MAEModel` (run by scvi-tools' TrainRunner)."""

from __future__ import annotations

import torch
from scvi.train import TrainingPlan

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
    * **Metrics cost no host synchronisation per step.** They are summed in device tensors
      each step and logged once per epoch: ``train_loss``, ``masked_nll_train`` (per masked
      entry, at the drawn masks), ``masked_fraction_train``, ``batch_correction_loss_train``
      and their ``validation`` counterparts; with ``on_step=True`` the step loss is logged
      every ``log_every_n_steps`` steps (a Lightning trainer argument of ``train()``).
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
        self._sums: dict[str, list] = {}

    # ------------------------------------------------------------------ schedule
    def on_fit_start(self) -> None:
        """Give an open-ended masking schedule the number of optimisation steps of this fit."""
        masker = getattr(self.module, "masker", None)
        if masker is not None and masker.schedule.needs_total_steps:
            total = int(self.trainer.estimated_stepping_batches)
            masker.schedule = masker.schedule.with_total_steps(max(1, total))

    # ------------------------------------------------------------------ metrics
    def _accumulate(self, mode: str, loss_output) -> None:
        n = float(loss_output.n_obs_minibatch)
        extras = loss_output.extra_metrics
        loss = loss_output.loss.detach()
        if mode not in self._sums:
            names = [
                name
                for name, value in extras.items()
                if name not in _SUMMED and torch.is_tensor(value) and value.dim() == 0
            ]
            # cells (on the host), then device sums: over entries, and per cell
            self._sums[mode] = [0.0, None, None, names]
        sums = self._sums[mode]
        # the loss and every other scalar extra metric (the masked fraction, a batch-correction
        # term) are averaged over the epoch's cells; the masked NLL is summed over entries, so
        # the epoch's value is per masked entry. Two stacks and two sums per step.
        names = sums[3]
        if not all(name in extras for name in (*names, *_SUMMED)):
            zero = loss.new_zeros(())
            extras = {name: extras.get(name, zero) for name in (*names, *_SUMMED)}
        per_cell = torch.stack([loss, *(extras[name] for name in names)]).float()
        per_entry = torch.stack([extras[name] for name in _SUMMED]).float()
        if sums[1] is None:
            sums[1], sums[2] = per_entry, per_cell * n
        else:
            sums[1].add_(per_entry)
            sums[2].add_(per_cell, alpha=n)
        sums[0] += n

    def _log_epoch(self, mode: str) -> None:
        sums = self._sums.pop(mode, None)
        if sums is None or sums[1] is None:
            return
        n = max(sums[0], 1.0)
        entries, per_cell, names = sums[1], sums[2], sums[3]
        metrics = {
            "train_loss" if mode == "train" else "validation_loss": per_cell[0] / n,
            f"masked_nll_{mode}": entries[0] / entries[1].clamp_min(1.0),
        }
        for i, name in enumerate(names):
            metrics[f"{name}_{mode}"] = per_cell[1 + i] / n
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)

    def training_step(self, batch, batch_idx):
        """One optimisation step; metrics are summed on the device."""
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self._accumulate("train", loss_output)
        if self.on_step and self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train_loss_step", loss_output.loss.detach(), on_step=True, on_epoch=False)
        return loss_output.loss

    def validation_step(self, batch, batch_idx):
        """Validation loss of one mini-batch at the fixed validation masks."""
        _, _, loss_output = self.forward(
            batch, loss_kwargs=self.loss_kwargs, inference_kwargs={"masking": "validation"}
        )
        self._accumulate("validation", loss_output)

    def on_train_epoch_start(self) -> None:
        # Lightning keeps the mode submodules had when fitting started; a module that was
        # put in evaluation mode (a loaded model, a scArches query) must still train with
        # masks, dropout and batch statistics
        self.module.train()
        self._sums.pop("train", None)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self._sums.pop("validation", None)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("validation")

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
