"""How the entry points in src/ end on an error (mtrank.utils.cli), through real subprocesses of the scripts.

A user error (ConfigError, DataValidationError, InputFileError: all mtrank.errors.UserError) prints one block
``Error: <message>`` naming the key, file or column, with no Python traceback, and exits with status 2; an
internal error keeps Hydra's report with its traceback (status 1); HYDRA_FULL_ERROR=1 shows everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import FAST_RUN
from mtrank.errors import InputFileError, UserError
from mtrank.tuning.synthetic import simulated_predictions
from mtrank.utils.checkpoint_files import check_fits, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ENV = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
ENV.update(PROJECT_ROOT=str(ROOT), WANDB_MODE="offline", OMP_NUM_THREADS="1")


def _run(script: str, *args: str, full_error: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**ENV, "HYDRA_FULL_ERROR": "1"} if full_error else ENV
    return subprocess.run(
        [sys.executable, script, *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _user_error(r: subprocess.CompletedProcess, *expected: str) -> str:
    """The run ended with status 2 and one block holding every ``expected`` text, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    block = r.stderr[r.stderr.index("Error: ") :]
    for text in expected:
        assert text in block, (text, block)
    assert block.rstrip().endswith("(set HYDRA_FULL_ERROR=1 to see the traceback)")
    return block


def _train(tmp_path: Path, *args: str, multirun: bool = False, full_error: bool = False) -> subprocess.CompletedProcess:
    return _run(
        str(SRC / "train.py"),
        *(["-m"] if multirun else []),
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *args,
        full_error=full_error,
    )


# ------------------------------------------------------------------------------------------ training configs


def test_max_epochs_zero_is_refused_before_anything_runs(tmp_path):
    block = _user_error(_train(tmp_path, "trainer.max_epochs=0"), "trainer.max_epochs = 0: expected a number of epochs")
    assert "optimized_metric" not in block  # once: KeyError after testing an untrained model
    assert not (tmp_path / "data").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_seed_that_is_no_number_names_the_key(tmp_path):
    _user_error(_train(tmp_path, "seed=abc"), "seed = 'abc': expected a whole number")


def test_batch_size_zero_names_the_key(tmp_path):
    _user_error(_train(tmp_path, "data.batch_size=0"), "data.batch_size = 0: expected a whole number of rows ≥ 1")


def test_the_utility_search_space_with_train_names_the_entry_point(tmp_path):
    """--help offers hparams_search=ax_utility to src/train.py too: once an 80-line InterpolationKeyError."""
    block = _user_error(
        _train(tmp_path, "hparams_search=ax_utility", multirun=True),
        "hparams_search=ax_utility: none of its search parameters",
        "hparams_search=ax_utility: src/tune_utility.py",
    )
    assert "InterpolationKeyError" not in block
    assert not (tmp_path / "sweep" / "0").exists()  # no job was launched


def test_full_error_shows_the_traceback(tmp_path):
    r = _train(tmp_path, "seed=abc", full_error=True)
    assert r.returncode != 0 and "Traceback" in r.stderr
    assert "ConfigError: invalid train config: seed = 'abc'" in r.stderr


# ------------------------------------------------------------------------------------------ utility tuning


@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("predictions")
    df = simulated_predictions(500, seed=0)
    full, true_only = tmp / "pred.parquet", tmp / "pred_true_only.parquet"
    df.write_parquet(full)
    df.select(
        [
            c
            for c in df.columns
            if not c.startswith(("p_raw_",)) and not (c.startswith("p_") and not c.startswith("p_true_"))
        ]
    ).write_parquet(true_only)
    return {"full": full, "true_only": true_only}


def _tune(tmp_path: Path, predictions: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(
        str(SRC / "tune_utility.py"),
        f"predictions={predictions}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *args,
    )


def test_total_zero_is_refused_instead_of_exhausting_ax(tmp_path, predictions):
    block = _user_error(
        _tune(tmp_path, predictions["full"], "utility.total=0"),
        "utility.total = 0: the weights add up to it only with each at its lower bound",
    )
    assert "SearchSpaceExhausted" not in block


def test_duplicate_outcome_constraint_names_both_keys(tmp_path, predictions):
    _user_error(
        _tune(tmp_path, predictions["full"], "utility.extra_constraints=['f_click >= 1.0 * baseline']"),
        "utility.extra_constraints[0] = 'f_click >= 1.0 * baseline' bounds f_click from the same side as "
        "utility.constraints.click",
    )


def test_predictions_without_p_columns_are_named_not_misread(tmp_path, predictions):
    """p_true_<task> (the simulator's probabilities) is no prediction column: no "did you mean 'true_save'"."""
    block = _user_error(
        _tune(tmp_path, predictions["true_only"]),
        f"predictions = {predictions['true_only']}: no prediction column p_<task> in the file",
    )
    assert "did you mean" not in block and "'true_save'" not in block


# ------------------------------------------------------------------------------------------ checkpoints


def _ckpt(path: Path, tasks: list[str], state: dict | None = None) -> Path:
    torch.save(
        {
            "pytorch-lightning_version": "2.6.0",
            "state_dict": state or {"w": torch.zeros(2)},
            "hyper_parameters": {"spec": {"tasks": tasks}},
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    "name,content,expected",
    [
        (
            "preds.csv",
            b"request_id,item_id,p_click\n1,2,0.5\n",
            "a text file (it starts with 'request_id,item_id,p_click'), not a checkpoint",
        ),
        ("empty.ckpt", b"", "the file is empty (0 bytes)"),
        ("noise.ckpt", bytes(range(7, 250)), "a binary file of another format, not a checkpoint"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_named(tmp_path, name, content, expected):
    f = tmp_path / name
    f.write_bytes(content)
    _user_error(
        _run(
            str(SRC / "eval.py"),
            f"ckpt_path={f}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ),
        f"ckpt_path = {f}: {expected}",
    )


class Custom:  # a pickled object: torch.load(weights_only=True) refuses it
    pass


def test_a_pickled_object_is_refused_without_torch_advice(tmp_path):
    f = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "model": Custom()}, f)
    block = _user_error(
        _run(
            str(SRC / "predict.py"),
            f"ckpt_path={f}",
            "inputs=x.csv",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ),
        f"ckpt_path = {f}: cannot be read as a checkpoint (Unsupported global",
    )
    assert "weights_only" not in block and "will likely succeed" not in block and "Re-running" not in block


def test_a_torch_file_that_is_no_lightning_checkpoint(tmp_path):
    f = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, f)
    with pytest.raises(InputFileError, match=r"a PyTorch file but not a Lightning checkpoint .*\['a'\]"):
        read_checkpoint(f)


def test_check_fits_names_other_tasks_and_other_weights(tmp_path):
    class Spec:
        tasks = ("save", "click", "hide")

    class Model:
        spec = Spec()

        def state_dict(self):
            return {"w": torch.zeros(2), "towers.hide": torch.zeros(3)}

    with pytest.raises(
        InputFileError,
        match=r"from a run with other tasks: it has \[save, click\], this config "
        r"trains \[save, click, hide\]",
    ):
        check_fits(_ckpt(tmp_path / "a.ckpt", ["save", "click"]), Model())
    with pytest.raises(InputFileError, match=r"do not fit the model .*1 weights missing \(e\.g\. towers\.hide\)"):
        check_fits(_ckpt(tmp_path / "b.ckpt", ["save", "click", "hide"]), Model())
    check_fits(_ckpt(tmp_path / "c.ckpt", ["save", "click", "hide"], Model().state_dict()), Model())  # fits
    assert issubclass(InputFileError, UserError)


def test_resuming_from_a_run_with_other_tasks_names_ckpt_path(tmp_path):
    """Once: Lightning's raw state_dict missing-keys error, after the data was processed."""
    f = _ckpt(tmp_path / "other.ckpt", ["save", "click"])
    _user_error(
        _train(tmp_path, *FAST_RUN, f"ckpt_path={f}"),
        f"ckpt_path = {f}: the checkpoint is from a run with other tasks: it has [save, click], this config "
        "trains [save, click, long_click, closeup]",
    )


# ------------------------------------------------------------------------------------------ the helper itself

APP = textwrap.dedent("""
    import hydra
    from mtrank.data.errors import DataValidationError
    from mtrank.utils.cli import user_errors

    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    @user_errors
    def main(cfg):
        kind = cfg.get("kind")
        if kind == "user":
            raise DataValidationError("file new.csv: column 'price' holds text")
        if kind == "internal":
            raise RuntimeError("a bug of ours")
        return 1.0

    if __name__ == "__main__":
        main()
""")


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("app") / "app.py"
    f.write_text(APP)
    return f


def test_internal_error_keeps_its_traceback(app, tmp_path):
    r = _run(str(app), "+kind=internal", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 1 and "Traceback" in r.stderr and "RuntimeError: a bug of ours" in r.stderr
    assert "\nError: a bug of ours" not in r.stderr and "HYDRA_FULL_ERROR=1 to see the traceback" not in r.stderr


def test_user_error_is_one_block_and_status_2(app, tmp_path):
    _user_error(_run(str(app), "+kind=user", f"hydra.run.dir={tmp_path}"), "Error: file new.csv: column 'price'")
    r = _run(str(app), "+kind=user", f"hydra.run.dir={tmp_path}", full_error=True)
    assert r.returncode == 1 and "Traceback" in r.stderr and "DataValidationError: file new.csv" in r.stderr


def test_user_error_in_a_multirun_fails_the_job_for_the_sweeper(app, tmp_path):
    """In a multirun the error is the sweeper's to record (Hydra's basic sweeper re-raises it)."""
    r = _run(str(app), "-m", "+kind=user,ok", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode != 0 and "DataValidationError" in r.stderr


# ------------------------------------------------------------------------------------------ wording


def test_oov_wording_counts_rare_ids_too():
    """With min_count=2 (KuaiRand) an id seen once in training is in the OOV bucket too: the predict warning says
    "unseen in training or rarer than min_count=2", not "never seen in training"."""
    from types import SimpleNamespace

    from mtrank.scoring.raw_logs import unseen_words

    def run(min_count):
        return SimpleNamespace(
            preprocessing=SimpleNamespace(metadata={"config": {"encoding": {"min_count": min_count}}})
        )

    assert unseen_words(run(2)) == "unseen in training or rarer than min_count=2"
    assert unseen_words(run(1)) == "unseen in training"
    assert unseen_words(SimpleNamespace(preprocessing=None)) == "unseen in training"
