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
        self._sums: dict[str, torch.Tensor] = {}
        self._extra_names: list[str] = []

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
        extras = {
            name: value.detach().float()
            for name, value in loss_output.extra_metrics.items()
            if torch.is_tensor(value) and value.dim() == 0
        }
        sums = self._sums.get(mode)
        if sums is None:
            self._extra_names = [name for name in extras if name not in _SUMMED]
            sums = torch.zeros(4 + len(self._extra_names), device=loss_output.loss.device)
            self._sums[mode] = sums
        sums[0] += loss_output.loss.detach() * n
        sums[1] += n
        # the masked NLL is summed over entries, so the epoch's value is per masked entry
        sums[2] += extras["scored_nll_sum"]
        sums[3] += extras["scored_entries"]
        # every other scalar extra metric (the masked fraction, a batch-correction term) is
        # averaged over the epoch's cells like the loss
        for i, name in enumerate(self._extra_names):
            if name in extras:
                sums[4 + i] += extras[name] * n

    def _log_epoch(self, mode: str) -> None:
        sums = self._sums.pop(mode, None)
        if sums is None:
            return
        n = sums[1].clamp_min(1.0)
        metrics = {
            "train_loss" if mode == "train" else "validation_loss": sums[0] / n,
            f"masked_nll_{mode}": sums[2] / sums[3].clamp_min(1.0),
        }
        for i, name in enumerate(self._extra_names):
            metrics[f"{name}_{mode}"] = sums[4 + i] / n
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
            if curriculum is None:
                return optimizer_cls(params, **kwargs)
            generator_ids = {id(p) for p in curriculum.generator_parameters()}
            rest = [p for p in params if id(p) not in generator_ids]
            return optimizer_cls([{"params": rest}, curriculum.generator_param_group()], **kwargs)

        return create
