"""The LightningModule: a multi-head network trained with Eq. 2 (multi-task) or Eq. 1 (binary baseline).

Both objectives report the same per-engagement-type metrics (:mod:`mtrank.metrics`): the multi-task model
scores type t with head t, the binary model scores every type with its single engagement score, so the two
compare head to head.

Scores and probabilities. The train split is negatively downsampled, so a head's sigmoid (``task_probabilities``,
the "raw" score) lives on the downsampled scale. The module knows each head's keep rate (``downsampling``, from
the processed data's counts, see :mod:`mtrank.calibration`) and corrects it with Eq. 3 (a logit shift by
log β_t), then applies the post-hoc calibrators attached with :meth:`RankingModule.set_calibration`, if any:
that is ``calibrated_probabilities``, what ``predict_step`` returns as ``probs`` and what the val/test metrics
with the plain names (``ece``, ``brier``, ``logloss``, ``auroc``…) are computed on. The raw scores' calibration
figures are logged beside them as ``<stage>/<task>/ece_raw``, ``brier_raw``, ``logloss_raw``, and, while
post-hoc calibrators are attached, those after Eq. 3 alone as ``ece_corrected``, ``brier_corrected``,
``logloss_corrected``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mtrank.calibration.config import check_reweight
from mtrank.calibration.downsampling import correct_logits
from mtrank.calibration.run_calibration import Calibration
from mtrank.data.spec import CategoricalFeature, FeatureSpec
from mtrank.metrics.stage import stage_metrics
from mtrank.models.ensemble import ensemble_config
from mtrank.models.param_groups import build_param_groups
from mtrank.training.checkpoints import RNG_KEY, rng_states, set_rng_states
from mtrank.training.config import CompileConfig
from mtrank.training.objectives import build_objective, checkpoint_keys


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


def spec_to_dict(spec: FeatureSpec) -> dict:
    return {
        "categorical": [asdict(c) for c in spec.categorical],
        "numeric": list(spec.numeric),
        "tasks": list(spec.tasks),
        "has_p_true": spec.has_p_true,
    }


def spec_from_dict(d: Mapping[str, Any]) -> FeatureSpec:
    return FeatureSpec(
        categorical=tuple(CategoricalFeature(**c) for c in d["categorical"]),
        numeric=tuple(d["numeric"]),
        tasks=tuple(d["tasks"]),
        has_p_true=bool(d["has_p_true"]),
    )


def compile_options(compile: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``model.compile`` (:class:`~mtrank.training.config.CompileConfig`): None (eager) or the keyword arguments
    of ``torch.compile``."""
    return CompileConfig(compile).options


_OBJECTIVE = "objective."


def _objective_keys_on_top(module: RankingModule, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """State-dict post-hook: the objective's tensors under the keys of older checkpoints (``task_weighting.*``,
    ``pos_weight``, ``importance``), not ``objective.*``; checkpoints keep one format."""
    for key in [k for k in state_dict if k.startswith(prefix + _OBJECTIVE)]:
        state_dict[prefix + key[len(prefix + _OBJECTIVE) :]] = state_dict.pop(key)


def _objective_keys_into_objective(module: RankingModule, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook, the inverse of :func:`_objective_keys_on_top`."""
    for key in checkpoint_keys(module.objective):
        if prefix + key in state_dict:
            state_dict[prefix + _OBJECTIVE + key] = state_dict.pop(prefix + key)


class RankingModule(pl.LightningModule):
    """Multi-head ranker.

    Args:
        spec: the processed data's features and tasks (a dict from :func:`spec_to_dict` or a FeatureSpec).
        net: Hydra config of the network (``_target_`` a :class:`~mtrank.models.networks.MultiHeadNet`); it is
            called with ``spec`` and ``heads``.
        loss: ``objective`` (multitask | binary) and its settings: for multitask ``task_weighting`` (equal |
            fixed | uncertainty), ``task_weights``, ``uncertainty_variant``, ``pos_weight`` (per task);
            for binary ``importance_weights`` (per task) and ``rule`` (max | sum).
        optimizer: Hydra config of a torch optimizer (``_target_``, lr, …); params are passed at build time.
        scheduler: optional Hydra config of a LR scheduler.
        metrics: ``thresholds`` (None = exact AUROC / PR-AUC) and ``ece_bins``.
        downsampling: ``{"beta": β, "effective_beta": {task: β_t}, "mode": "correct" | "reweight"}`` of the
            train split (:func:`mtrank.calibration.downsampling.downsampling_from_metadata`); None = no downsampling (β = 1).
            ``correct``: Eq. 3 per head at prediction time; ``reweight``: the training loss weights the sampled
            rows (no engagement of any task) by 1/β, so the heads need no correction.
        ensemble_size: k > 1 trains k independently initialised copies of ``net`` (each on its own loss) and
            serves the logit of the mean of their probabilities (:mod:`mtrank.models.ensemble`); it is saved as
            the net's config (an ``EnsembleNet``), so a checkpoint rebuilds the ensemble with the default 1.
    """

    def __init__(
        self,
        spec: Mapping[str, Any] | FeatureSpec,
        net: Mapping[str, Any],
        loss: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        downsampling: Mapping[str, Any] | None = None,
        compile: bool | Mapping[str, Any] | None = None,
        param_groups: Mapping[str, Any] | None = None,
        ensemble_size: int = 1,
    ):
        super().__init__()
        if isinstance(spec, FeatureSpec):
            spec = spec_to_dict(spec)
        net, loss, optimizer, scheduler, metrics, downsampling = map(
            _plain, (net, loss, optimizer, scheduler, metrics, downsampling)
        )
        net = ensemble_config(net, ensemble_size)  # model.ensemble_size: the plain net for 1
        compile = _plain(compile)
        self.save_hyperparameters(
            {
                "spec": _plain(spec),
                "net": net,
                "loss": loss,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "metrics": metrics,
                "downsampling": downsampling,
                "compile": compile,
                "param_groups": _plain(param_groups),
            }
        )
        self.compile_options = compile_options(compile)
        self.spec = spec_from_dict(spec)
        self.tasks = list(self.spec.tasks)
        objective = build_objective(loss, self.tasks)  # its heads, its loss, its scores per type, its β
        self.heads = objective.heads
        # objects are passed after instantiation: Hydra would turn a dataclass argument into a config node
        self.net = hydra.utils.instantiate(net, _partial_=True, _convert_="all")(spec=self.spec, heads=self.heads)
        self.objective = objective  # after the net: the optimiser's parameter order stays that of older checkpoints
        self.register_state_dict_post_hook(_objective_keys_on_top)
        self.register_load_state_dict_pre_hook(_objective_keys_into_objective)
        # Eq. 3 per head: the correction-only calibration; post-hoc calibrators are attached later
        self.calibration = Calibration.from_downsampling(downsampling or {"beta": 1.0}, self.tasks, objective)
        mode = self.calibration.info["mode"]
        beta = float(self.calibration.info["beta"])
        check_reweight(mode, objective.name, objective.supports_reweight)
        self.unengaged_weight = 1.0 / beta if (mode == "reweight" and beta < 1.0) else None
        head_betas = objective.head_betas(self.calibration.betas, beta)
        self.register_buffer("head_betas", torch.tensor(head_betas), persistent=False)
        metrics = metrics or {}
        # per evaluation stage (val, test): calibrated, raw and corrected scores' metrics and the mean loss
        self.stage_metrics = stage_metrics(
            self.tasks, self.spec.has_p_true, metrics.get("thresholds"), metrics.get("ece_bins", 15)
        )

    # ------------------------------------------------------------------ forward and scores

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits [B, n_heads]."""
        return self.net(batch)

    def task_probabilities(self, logits: Tensor) -> Tensor:
        """The raw score per task [B, T]: sigmoid of the heads, on the downsampled scale of the train split
        (the binary model's one score stands for every type)."""
        return self.objective.per_type(torch.sigmoid(logits.float()))

    def corrected_logits(self, logits: Tensor) -> Tensor:
        """Eq. 3 on the logit scale, per head: ``logits + log β_head`` [B, n_heads]."""
        return correct_logits(logits.float(), self.head_betas)

    def _corrected_probabilities(self, logits: Tensor) -> Tensor:
        return self.objective.per_type(torch.sigmoid(self.corrected_logits(logits)))

    def calibrated_probabilities(self, logits: Tensor) -> Tensor:
        """Probabilities per task [B, T]: Eq. 3 per head, then the attached post-hoc calibrators (if any)."""
        probs = self._corrected_probabilities(logits)
        if self.calibration.has_calibrators:
            probs = self.calibration.calibrate(probs, self.tasks)
        return probs

    def set_calibration(self, calibration: Calibration | None) -> None:
        """Attach the post-hoc calibrators of ``calibration`` (None: drop them, keep the correction).

        Its β per task must be those of this model (they come from the same processed data).
        """
        base = Calibration.from_downsampling(
            self.hparams.get("downsampling") or {"beta": 1.0}, self.tasks, self.objective
        )
        if calibration is None:
            self.calibration = base
            return
        if list(calibration.tasks) != list(self.tasks):
            raise ValueError(f"calibration tasks {calibration.tasks} differ from the model's tasks {self.tasks}")
        for t in self.tasks:
            if not math.isclose(calibration.betas[t], base.betas[t], rel_tol=1e-6):
                raise ValueError(
                    f"calibration β for task '{t}' is {calibration.betas[t]} but the model was trained with "
                    f"β = {base.betas[t]}: the calibration belongs to another run or data set"
                )
        self.calibration = calibration

    # ------------------------------------------------------------------ losses

    def compute_loss(
        self, logits: Tensor, labels: Tensor, row_weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """The training objective and, for multi-task, the per-task mean BCE [T].

        ``row_weights`` [B] (multi-task only): a weighted mean over rows instead of the plain mean.
        """
        return self.objective.loss(logits.float(), labels, row_weights)

    def training_row_weights(self, labels: Tensor) -> Tensor | None:
        """With ``reweight``: 1/β for the rows with no engagement of any task (the sampled ones), else 1."""
        if self.unengaged_weight is None:
            return None
        unengaged = (labels <= 0.5).all(dim=1)
        return torch.where(
            unengaged, torch.full_like(labels[:, 0], self.unengaged_weight), torch.ones_like(labels[:, 0])
        )

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        members = getattr(self.net, "member_logits", None)
        weights = self.training_row_weights(batch["labels"])
        if members is None:
            loss, per_task = self.compute_loss(self(batch), batch["labels"], weights)
            shown = loss
        else:  # a seed ensemble: the sum of the members' own losses, each member trained as if alone
            losses = [self.compute_loss(logits, batch["labels"], weights) for logits in members(batch)]
            loss = torch.stack([m for m, _ in losses]).sum()
            shown = loss / len(losses)  # logged: the members' mean, on the scale of one net's loss
            per_task = None if losses[0][1] is None else torch.stack([t for _, t in losses]).mean(0)
        if not self._logging_step():
            return loss
        bs = batch["labels"].shape[0]
        self.log("train/loss", shown, prog_bar=True, batch_size=bs)
        for name, value in self.objective.train_figures(per_task).items():
            self.log(f"train/{name}", value, batch_size=bs)
        return loss

    def _logging_step(self) -> bool:
        """Whether the loggers write this training step (every ``trainer.log_every_n_steps``). Step values logged
        at other steps are dropped by Lightning anyway, and each ``self.log`` costs ~1 ms of bookkeeping, as
        much as a tenth of a CPU step (benchmark c, ``scripts/bench_training.py``)."""
        trainer = self._trainer
        if trainer is None:
            return True
        n = max(int(getattr(trainer, "log_every_n_steps", 1) or 1), 1)
        # and the epoch's last batch, so that every epoch leaves its train/ figures in callback_metrics
        return (self.global_step + 1) % n == 0 or bool(getattr(trainer, "is_last_batch", False))

    def _eval_step(self, batch: Mapping[str, Tensor], stage: str) -> None:
        logits = self(batch)
        loss, _ = self.compute_loss(logits, batch["labels"])
        corrected = self._corrected_probabilities(logits) if self.calibration.has_calibrators else None
        self.stage_metrics[stage].update(
            loss,
            batch["labels"],
            self.calibrated_probabilities(logits),
            self.task_probabilities(logits),
            corrected,
            batch.get("p_true"),
        )

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        values = self.stage_metrics[stage].compute(with_corrected=self.calibration.has_calibrators)
        # torchmetrics has already synchronised across ranks: every rank logs the same numbers
        shown = {k: v.float() for k, v in values.items() if k in (f"{stage}/loss", f"{stage}/mean/auroc")}
        self.log_dict(shown, prog_bar=True)
        self.log_dict({k: v.float() for k, v in values.items() if k not in shown})
        self.stage_metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``probs``: corrected and calibrated probabilities [B, T]; ``probs_raw``: the raw scores [B, T]."""
        logits = self(batch)
        return {
            "request_id": batch["request_id"],
            "item_id": batch["item_id"],
            "probs": self.calibrated_probabilities(logits),
            "probs_raw": self.task_probabilities(logits),
        }

    # ------------------------------------------------------------------ epochs and optimisers

    def configure_model(self) -> None:
        # torch.compile in place (nn.Module.compile): parameter names, and so checkpoints, stay as without it
        if self.compile_options is not None and not getattr(self, "_compiled", False):
            self.net.compile(**self.compile_options)
            self._compiled = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()  # so that a resumed run draws the same dropout masks

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RNG_KEY in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            # set when training resumes, not now: creating the train DataLoader's iterator draws from the
            # generator, which the interrupted run had done before the checkpoint was saved
            self._resume_rng = checkpoint[RNG_KEY]

    def on_train_start(self) -> None:
        states = getattr(self, "_resume_rng", None)
        if states is not None:
            set_rng_states(states)
            self._resume_rng = None

    def on_train_epoch_start(self) -> None:
        # Streaming datasets reshuffle per epoch; DataLoader workers get a fresh copy with this epoch set.
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        params = self.parameters()
        if self.hparams.get("param_groups"):  # model.param_groups: per-part lr / weight decay
            params = build_param_groups(self.net, self.hparams.param_groups)
            other = [p for n, p in self.named_parameters() if not n.startswith("net.") and p.requires_grad]
            if other:  # e.g. learned task weights
                params.append({"params": other})
            # partial: Hydra would turn the groups' dicts into configs
            opt = hydra.utils.instantiate(self.hparams.optimizer, _partial_=True)(params)
        else:
            opt = hydra.utils.instantiate(self.hparams.optimizer, params=params)
        if not self.hparams.scheduler:
            return opt
        sched_cfg = dict(self.hparams.scheduler)
        monitor = sched_cfg.pop("monitor", None)
        interval = sched_cfg.pop("interval", "epoch")
        sched = hydra.utils.instantiate(sched_cfg, optimizer=opt)
        conf = {"scheduler": sched, "interval": interval}
        if monitor:
            conf["monitor"] = monitor
        return {"optimizer": opt, "lr_scheduler": conf}
