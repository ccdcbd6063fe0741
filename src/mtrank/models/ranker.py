"""The LightningModule: a multi-head network trained with Eq. 2 (multi-task) or Eq. 1 (binary baseline).

Both objectives report the same per-engagement-type metrics (:mod:`mtrank.metrics`): the multi-task model
scores type t with head t, the binary model scores every type with its single engagement score, so the two
compare head to head.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Sequence

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchmetrics import MeanMetric

from mtrank.data.spec import CategoricalFeature, FeatureSpec
from mtrank.losses import UncertaintyWeighting, bce_per_task, binary_importance_loss, build_task_weighting
from mtrank.metrics import MultiHeadMetrics

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
    """

    def __init__(
        self,
        spec: Mapping[str, Any] | FeatureSpec,
        net: Mapping[str, Any],
        loss: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if isinstance(spec, FeatureSpec):
            spec = spec_to_dict(spec)
        net, loss, optimizer, scheduler, metrics = map(_plain, (net, loss, optimizer, scheduler, metrics))
        self.save_hyperparameters({"spec": _plain(spec), "net": net, "loss": loss, "optimizer": optimizer,
                                   "scheduler": scheduler, "metrics": metrics})
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
        metrics = metrics or {}
        kw = dict(has_p_true=self.spec.has_p_true, thresholds=metrics.get("thresholds"),
                  ece_bins=metrics.get("ece_bins", 15))
        self.val_metrics = MultiHeadMetrics(self.tasks, "val", **kw)
        self.test_metrics = MultiHeadMetrics(self.tasks, "test", **kw)
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
        """A probability-like score per task [B, T] (the binary model's one score stands for every type)."""
        probs = torch.sigmoid(logits.float())
        if self.objective == "binary":
            probs = probs.expand(-1, len(self.tasks))
        return probs

    # ------------------------------------------------------------------ losses

    def compute_loss(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        """The training objective and, for multi-task, the per-task mean BCE [T]."""
        logits = logits.float()
        if self.objective == "binary":
            return binary_importance_loss(logits[:, 0], labels, self.importance, self.rule), None
        per_task = bce_per_task(logits, labels, self.pos_weight).mean(dim=0)
        return self.task_weighting(per_task), per_task

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch)
        loss, per_task = self.compute_loss(logits, batch["labels"])
        bs = batch["labels"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        if per_task is not None:
            w = self.task_weighting.weights()
            for i, t in enumerate(self.tasks):
                self.log(f"train/{t}/loss", per_task[i], batch_size=bs)
                if isinstance(self.task_weighting, UncertaintyWeighting):
                    self.log(f"train/{t}/task_weight", w[i], batch_size=bs)
        return loss

    def _eval_step(self, batch: Mapping[str, Tensor], metrics: MultiHeadMetrics, mean_loss: MeanMetric) -> None:
        logits = self(batch)
        loss, _ = self.compute_loss(logits, batch["labels"])
        mean_loss.update(loss, weight=batch["labels"].shape[0])
        metrics.update(self.task_probabilities(logits), batch["labels"], batch.get("p_true"))

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_loss)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_loss)

    def _log_epoch(self, stage: str, metrics: MultiHeadMetrics, mean_loss: MeanMetric) -> None:
        values = metrics.compute()
        values[f"{stage}/loss"] = mean_loss.compute()
        # torchmetrics has already synchronised across ranks: every rank logs the same numbers
        shown = {k: v.float() for k, v in values.items() if k in (f"{stage}/loss", f"{stage}/mean/auroc")}
        self.log_dict(shown, prog_bar=True)
        self.log_dict({k: v.float() for k, v in values.items() if k not in shown})
        metrics.reset()
        mean_loss.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics, self.val_loss)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics, self.test_loss)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch)
        return {"request_id": batch["request_id"], "item_id": batch["item_id"], "probs": self.task_probabilities(logits)}

    # ------------------------------------------------------------------ epochs and optimisers

    def on_train_epoch_start(self) -> None:
        # Streaming datasets reshuffle per epoch; DataLoader workers get a fresh copy with this epoch set.
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        opt = hydra.utils.instantiate(self.hparams.optimizer, params=self.parameters())
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
