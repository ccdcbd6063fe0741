"""No code from a checkpoint: a crafted checkpoint (it passes ``torch.load(weights_only=True)``) whose network config
names ``builtins.open`` is refused by src/eval.py and src/predict.py before anything is built, and the file it
names is left as it was; the same for a run's config.yaml whose data section names another target."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_config
from mtrank.training.safe_load import (
    UnsafeCheckpointError,
    check_checkpoint,
    check_checkpoint_dict,
    network_targets,
)

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"categorical": [], "numeric": ["price"], "tasks": ["click"], "has_p_true": False}
GOOD_NET = {"_target_": "mtrank.models.networks.SharedBottomNet", "trunk": [8], "tower": [4]}


def _hparams(net: dict) -> dict:
    return {
        "spec": SPEC,
        "net": net,
        "loss": {"objective": "multitask"},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01},
        "scheduler": None,
        "metrics": None,
        "downsampling": None,
        "compile": None,
    }


def _crafted(tmp_path: Path, victim: Path, nested: bool) -> Path:
    opener = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    # nested: instantiated for real when the network is built (the top level is built with _partial_=True)
    net = {**GOOD_NET, "trunk": opener} if nested else opener
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_000.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": _hparams(net), "pytorch-lightning_version": "2.6.6"}, ckpt)
    torch.load(ckpt, weights_only=True)  # the crafted file passes the weights-only unpickler
    return ckpt


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "precious.txt"
    path.write_text("do not truncate me\n")
    return path


@pytest.mark.parametrize("nested", [False, True], ids=["net_target", "nested_target"])
def test_eval_and_predict_refuse_a_checkpoint_that_names_builtins_open(tmp_path, victim, nested):
    from mtrank.jobs.evaluate import evaluate
    from mtrank.jobs.predict import predict

    ckpt = _crafted(tmp_path, victim, nested)
    where = "hyper_parameters.net.trunk._target_" if nested else "hyper_parameters.net._target_"
    eval_cfg = compose_config("eval", [f"ckpt_path={ckpt}"], tmp_path / "eval")
    with pytest.raises(UnsafeCheckpointError, match=rf"{ckpt}.*{where} = 'builtins.open'"):
        evaluate(eval_cfg)
    pred_cfg = compose_config("predict", [f"ckpt_path={ckpt}", f"inputs={victim}"], tmp_path / "pred")
    with pytest.raises(UnsafeCheckpointError, match=rf"{ckpt}.*{where} = 'builtins.open'"):
        predict(pred_cfg)
    assert victim.read_text() == "do not truncate me\n"


def test_eval_script_refuses_the_crafted_checkpoint_and_leaves_the_file(tmp_path, victim):
    ckpt = _crafted(tmp_path, victim, nested=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "eval.py"),
            f"ckpt_path={ckpt}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "refusing to load the checkpoint" in done.stderr and "builtins.open" in done.stderr, done.stderr[-3000:]
    assert victim.read_text() == "do not truncate me\n"


def test_every_slot_and_form_is_walked():
    nets = network_targets()
    assert {
        "mtrank.models.networks.SharedBottomNet",
        "mtrank.models.mmoe.MMoENet",
        "mtrank.models.mmoe.PLENet",
        "mtrank.models.linear.LogisticNet",
    } <= nets
    assert not any(n.startswith(("torch.", "builtins")) for n in nets)
    check_checkpoint_dict({"hyper_parameters": _hparams(GOOD_NET)}, "ok.ckpt")  # the shipped configs pass
    bad = [
        {"hyper_parameters": _hparams({**GOOD_NET, "_args_": [{"_target_": "os.remove", "path": "x"}]})},
        {"hyper_parameters": _hparams({**GOOD_NET, "_partial_": True, "_target_": "subprocess.run"})},
        {"hyper_parameters": {**_hparams(GOOD_NET), "optimizer": {"_target_": "shutil.rmtree", "path": "/"}}},
        {"hyper_parameters": {**_hparams(GOOD_NET), "loss": {"x": {"_target_": "builtins.exec"}}}},
        {
            "hyper_parameters": {
                **_hparams(GOOD_NET),
                "optimizer": {"_target_": "mtrank.models.networks.SharedBottomNet"},
            }
        },
        {"hparams": {"net": {"_target_": "builtins.eval"}}},  # a key Lightning also merges into the arguments
        {"hyper_parameters": _hparams({**GOOD_NET, "trunk": "${oc.env:HOME}"})},
    ]
    for ckpt in bad:
        with pytest.raises(UnsafeCheckpointError, match="refusing to load the checkpoint bad.ckpt"):
            check_checkpoint_dict(ckpt, "bad.ckpt")


def test_trusted_targets_come_only_from_the_environment(tmp_path, monkeypatch):
    ckpt = tmp_path / "custom.ckpt"
    torch.save({"hyper_parameters": _hparams({"_target_": "mypkg.nets.MyNet"})}, ckpt)
    with pytest.raises(UnsafeCheckpointError, match=r"mypkg.nets.MyNet.*MTRANK_TRUSTED_TARGETS"):
        check_checkpoint(ckpt)
    monkeypatch.setenv("MTRANK_TRUSTED_TARGETS", "mypkg.nets.MyNet")
    check_checkpoint(ckpt)


def test_a_run_config_may_only_build_the_datamodule(tmp_path, victim):
    from mtrank.scoring.run import LoadedRun

    cfg = OmegaConf.create({"data": {"_target_": "builtins.open", "_args_": [str(victim), "w"]}})
    run = LoadedRun(
        model=None,
        ckpt_path=tmp_path / "x.ckpt",
        run_dir=tmp_path,
        calibration=None,  # type: ignore[arg-type]
        train_config=cfg,
        preprocessing=None,
    )
    with pytest.raises(UnsafeCheckpointError, match=rf"{tmp_path / 'config.yaml'}: data._target_ = 'builtins.open'"):
        run.processed_data()
    assert victim.read_text() == "do not truncate me\n"


def test_an_unreadable_or_pickled_checkpoint_is_named(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=rf"could not load the checkpoint {junk} \(weights only"):
        check_checkpoint(junk)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"hyper_parameters": {"net": OmegaConf.create({"a": 1})}}, pickled)  # an object, not plain data
    with pytest.raises(RuntimeError, match=rf"could not load the checkpoint {pickled}"):
        check_checkpoint(pickled)
