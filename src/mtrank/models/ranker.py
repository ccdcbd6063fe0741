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
from dataclasses import asdict
from typing import Any, Mapping, Sequence

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchmetrics import MeanMetric

from mtrank.calibration import Calibration, correct_logits
from mtrank.calibration_metrics import RawScoreMetrics
from mtrank.checkpoints import RNG_KEY, rng_states, set_rng_states
from mtrank.data.spec import CategoricalFeature, FeatureSpec
from mtrank.losses import UncertaintyWeighting, bce_per_task, binary_importance_loss, build_task_weighting
from mtrank.metrics import MultiHeadMetrics
from mtrank.models.param_groups import build_param_groups

OBJECTIVES = ("multitask", "binary")
BINARY_HEAD = "engagement"


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
    """``model.compile``: false/null (eager), true (``torch.compile`` defaults) or the keyword arguments of
    ``torch.compile`` (``backend``, ``mode``, ``dynamic``, ``fullgraph``, ``options``)."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if isinstance(compile, Mapping):
        allowed = {"backend", "mode", "dynamic", "fullgraph", "options"}
        unknown = sorted(set(compile) - allowed)
        if unknown:
            raise ValueError(f"model.compile has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        return {k: v for k, v in compile.items() if v is not None}
    raise ValueError(f"model.compile = {compile!r}: expected true, false or a mapping of torch.compile arguments")

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
            train split (:func:`mtrank.calibration.downsampling_from_metadata`); None = no downsampling (β = 1).
            ``correct``: Eq. 3 per head at prediction time; ``reweight``: the training loss weights the sampled
            rows (no engagement of any task) by 1/β, so the heads need no correction.
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
    ):
        super().__init__()
        if isinstance(spec, FeatureSpec):
            spec = spec_to_dict(spec)
        net, loss, optimizer, scheduler, metrics, downsampling = map(
            _plain, (net, loss, optimizer, scheduler, metrics, downsampling)
        )
        compile = _plain(compile)
        self.save_hyperparameters({"spec": _plain(spec), "net": net, "loss": loss, "optimizer": optimizer,
                                   "scheduler": scheduler, "metrics": metrics, "downsampling": downsampling,
                                   "compile": compile, "param_groups": _plain(param_groups)})
        self.compile_options = compile_options(compile)
        self.spec = spec_from_dict(spec)
        self.tasks = list(self.spec.tasks)
        self.objective = loss.get("objective", "multitask")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"loss.objective = '{self.objective}': expected one of {list(OBJECTIVES)}")
        self.heads = self.tasks if self.objective == "multitask" else [BINARY_HEAD]
        # objects are passed after instantiation: Hydra would turn a dataclass argument into a config node
        self.net = hydra.utils.instantiate(net, _partial_=True, _convert_="all")(spec=self.spec, heads=self.heads)
        if self.objective == "multitask":
            self.task_weighting = build_task_weighting(
                loss.get("task_weighting", "equal"),
                self.tasks,
                weights=loss.get("task_weights"),
                variant=loss.get("uncertainty_variant", "kendall"),
            )
            pw = loss.get("pos_weight")
            self.register_buffer("pos_weight", self._per_task(pw, "loss.pos_weight", default=1.0) if pw else None)
        else:
            self.register_buffer(
                "importance", self._per_task(loss.get("importance_weights"), "loss.importance_weights", default=None)
            )
            self.rule = loss.get("rule", "max")
            if self.rule not in ("max", "sum"):
                raise ValueError(f"loss.rule = '{self.rule}': expected one of ['max', 'sum']")
        # Eq. 3 per head: the correction-only calibration; post-hoc calibrators are attached later
        self.calibration = Calibration.from_downsampling(
            downsampling or {"beta": 1.0}, self.tasks, self.objective
        )
        mode = self.calibration.info["mode"]
        beta = float(self.calibration.info["beta"])
        if mode == "reweight" and self.objective != "multitask":
            raise ValueError("calibration.downsampling=reweight needs loss.objective=multitask")
        self.unengaged_weight = 1.0 / beta if (mode == "reweight" and beta < 1.0) else None
        head_betas = (
            self.calibration.beta_vector(self.tasks) if self.objective == "multitask"
            else [beta]
        )
        self.register_buffer("head_betas", torch.tensor(head_betas), persistent=False)
        metrics = metrics or {}
        ece_bins = metrics.get("ece_bins", 15)
        kw = dict(has_p_true=self.spec.has_p_true, thresholds=metrics.get("thresholds"), ece_bins=ece_bins)
        self.val_metrics = MultiHeadMetrics(self.tasks, "val", **kw)
        self.test_metrics = MultiHeadMetrics(self.tasks, "test", **kw)
        self.val_raw_metrics = RawScoreMetrics(self.tasks, "val", ece_bins=ece_bins)
        self.test_raw_metrics = RawScoreMetrics(self.tasks, "test", ece_bins=ece_bins)
        # after Eq. 3 but before the post-hoc calibrators: logged only while calibrators are attached
        self.val_corrected_metrics = RawScoreMetrics(self.tasks, "val", ece_bins=ece_bins, suffix="_corrected")
        self.test_corrected_metrics = RawScoreMetrics(self.tasks, "test", ece_bins=ece_bins, suffix="_corrected")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    def _per_task(self, mapping: Mapping[str, float] | None, key: str, default: float | None) -> Tensor:
        mapping = dict(mapping or {})
        extra = sorted(set(mapping) - set(self.tasks))
        missing = [t for t in self.tasks if t not in mapping]
        if extra or (default is None and missing):
            raise ValueError(
                f"{key} has keys {sorted(mapping)} but the tasks are {self.tasks}"
                + (f"; unknown: {extra}" if extra else "")
                + (f"; missing: {missing}" if default is None and missing else "")
            )
        return torch.tensor([float(mapping.get(t, default)) for t in self.tasks])

    # ------------------------------------------------------------------ forward and scores

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits [B, n_heads]."""
        return self.net(batch)

    def task_probabilities(self, logits: Tensor) -> Tensor:
        """The raw score per task [B, T]: sigmoid of the heads, on the downsampled scale of the train split
        (the binary model's one score stands for every type)."""
        probs = torch.sigmoid(logits.float())
        if self.objective == "binary":
            probs = probs.expand(-1, len(self.tasks))
        return probs

    def corrected_logits(self, logits: Tensor) -> Tensor:
        """Eq. 3 on the logit scale, per head: ``logits + log β_head`` [B, n_heads]."""
        return correct_logits(logits.float(), self.head_betas)

    def _corrected_probabilities(self, logits: Tensor) -> Tensor:
        probs = torch.sigmoid(self.corrected_logits(logits))
        return probs.expand(-1, len(self.tasks)) if self.objective == "binary" else probs

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
        base = Calibration.from_downsampling(self.hparams.get("downsampling") or {"beta": 1.0}, self.tasks,
                                             self.objective)
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
        logits = logits.float()
        if self.objective == "binary":
            if row_weights is not None:
                raise ValueError("row_weights need loss.objective=multitask")
            return binary_importance_loss(logits[:, 0], labels, self.importance, self.rule), None
        bce = bce_per_task(logits, labels, self.pos_weight)
        if row_weights is None:
            per_task = bce.mean(dim=0)
        else:
            w = row_weights.to(bce.dtype).reshape(-1, 1)
            per_task = (bce * w).sum(dim=0) / w.sum().clamp_min(1e-12)
        return self.task_weighting(per_task), per_task

    def training_row_weights(self, labels: Tensor) -> Tensor | None:
        """With ``reweight``: 1/β for the rows with no engagement of any task (the sampled ones), else 1."""
        if self.unengaged_weight is None:
            return None
        unengaged = (labels <= 0.5).all(dim=1)
        return torch.where(unengaged, torch.full_like(labels[:, 0], self.unengaged_weight), torch.ones_like(labels[:, 0]))

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch)
        loss, per_task = self.compute_loss(logits, batch["labels"], self.training_row_weights(batch["labels"]))
        if not self._logging_step():
            return loss
        bs = batch["labels"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        if per_task is not None:
            w = self.task_weighting.weights()
            for i, t in enumerate(self.tasks):
                self.log(f"train/{t}/loss", per_task[i], batch_size=bs)
                if isinstance(self.task_weighting, UncertaintyWeighting):
                    self.log(f"train/{t}/task_weight", w[i], batch_size=bs)
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
        getattr(self, f"{stage}_loss").update(loss, weight=batch["labels"].shape[0])
        getattr(self, f"{stage}_metrics").update(self.calibrated_probabilities(logits), batch["labels"],
                                                 batch.get("p_true"))
        getattr(self, f"{stage}_raw_metrics").update(self.task_probabilities(logits), batch["labels"])
        if self.calibration.has_calibrators:
            getattr(self, f"{stage}_corrected_metrics").update(self._corrected_probabilities(logits), batch["labels"])

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        metrics, raw, mean_loss = (getattr(self, f"{stage}_{k}") for k in ("metrics", "raw_metrics", "loss"))
        values = metrics.compute()
        values.update(raw.compute())
        raw.reset()
        if self.calibration.has_calibrators:
            corrected = getattr(self, f"{stage}_corrected_metrics")
            values.update(corrected.compute())
            corrected.reset()
        values[f"{stage}/loss"] = mean_loss.compute()
        # torchmetrics has already synchronised across ranks: every rank logs the same numbers
        shown = {k: v.float() for k, v in values.items() if k in (f"{stage}/loss", f"{stage}/mean/auroc")}
        self.log_dict(shown, prog_bar=True)
        self.log_dict({k: v.float() for k, v in values.items() if k not in shown})
        metrics.reset()
        mean_loss.reset()

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
