"""The upstream Hydra Ax sweeper's tests, run against mtrank's sweeper (``hydra/sweeper=ax``).

Ported from facebookresearch/hydra ``plugins/hydra_ax_sweeper/tests/test_ax_sweeper_plugin.py`` and its apps
(``tests/apps/polynomial*.py``, ``tests/config/``, ``example/banana.py``), rewritten as ``tests/ax_apps/``. Our keys
replace upstream's: ``hydra.sweeper.n_trials`` for ``ax_config.max_trials``, ``minimize`` for
``ax_config.experiment.minimize``, ``batch_size`` for ``max_batch_size``; the results file is ours
(``best_evaluated_params`` for upstream's ``ax`` entry). Every sweep uses Sobol points
(``generation.method=random_search``: no GP fitting) and no baseline arm (upstream has none).

Deliberately different from upstream (each test says so where it applies):

* **Expected optimum.** Upstream asserts the optimum that its seed and early stopping happened to reach in a few
  trials, and two of its asserts are marked "TODO: y should actually be ..." (the wrong optimum). We give the
  sweep a budget of at least the number of points of the (discrete) space instead: the sweep tries every point,
  stops cleanly when the space is exhausted, and must report the true optimum.
* **Continuous log-scale runs.** Upstream runs up to 10000 trials with early stopping; we check the space (log
  scale, bounds, integer type) and a short run that stays inside it.
* **Chunking.** Upstream tests its helper ``CoreAxSweeper.chunks(batch, n)`` (5 valid and 3 invalid ``n``).
  Ours has no such helper: it asks Ax for ``batch_size`` trials at a time and launches them together. The
  invalid inputs are ported as ``batch_size`` values refused when the sweeper is built; the valid ones are not
  ported as such (nothing to call), ``test_jobs_dirs`` checks the batched launch instead.
* **Not ported:** the tests of upstream versions before Hydra 1.0 (``quadratic.x_arg=-1:1`` range syntax,
  ``_``/``.`` key normalisation with escape characters), which current upstream dropped with that syntax.
* **Log wording.** The parameter lines are upstream's (``name: range=[a, b]``, ``name: choice=[...]``,
  ``name: fixed=v``); the result lines are ours: ``Best trial <i>: value=<v> with {<params>}`` instead of
  ``New best value: <v>`` / ``Best parameters: {...}``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

from hydra_plugins.mtrank_ax_sweeper.ax_sweeper import AxSweeper
from mtrank.tuning.space import Choice, Range
from mtrank.tuning.sweep_syntax import parse_param, range_values

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "ax_apps" / "polynomial.py"
ENV = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
ENV.update(PROJECT_ROOT=str(ROOT), OMP_NUM_THREADS="1")


def sweep(tmp_path: Path, *args: str, config: str | None = None, ok: bool = True) -> tuple[str, dict | None]:
    """Run the app as a multirun; (stdout + stderr, optimization_results.yaml)."""
    cmd = [
        sys.executable,
        str(APP),
        *(["--config-name", config] if config else []),
        "-m",
        f"hydra.searchpath=[file://{ROOT / 'conf'}]",
        f"hydra.sweep.dir={tmp_path}",
        *args,
    ]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    if ok:
        assert r.returncode == 0, out[-4000:]
    res = tmp_path / "optimization_results.yaml"
    return out, (yaml.safe_load(res.read_text()) if res.exists() else None)


def job_dirs(tmp_path: Path) -> list[str]:
    return sorted(d.name for d in tmp_path.iterdir() if d.is_dir())


# ------------------------------------------------------------------------------------------ upstream tests


def test_discovery():
    assert AxSweeper.__name__ in [x.__name__ for x in Plugins.instance().discover(Sweeper)]


@pytest.mark.parametrize("n", [-1, -11, 0])
def test_chunk_method_for_invalid_inputs(n):
    """Upstream: chunks(batch, n) refuses n < 1. Ours: hydra.sweeper.batch_size < 1 is refused."""
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        AxSweeper(objective="value", batch_size=n)


def test_jobs_dirs(tmp_path):
    """6 trials in batches of 2: 6 job folders, one per trial, none shared."""
    sweep(tmp_path, "app=quadratic", "params=basic", "hydra.sweeper.n_trials=6", "hydra.sweeper.batch_size=2")
    assert job_dirs(tmp_path) == [str(i) for i in range(6)]


def test_jobs_configured_via_config(tmp_path):
    """params=basic: integer x, y in [-1, 1] (whole-number bounds, as upstream infers them); 9 points. Upstream's
    5 trials hit (0, -1) by its seed; ours searches all 9 (budget 20, capped) and must find it."""
    out, res = sweep(
        tmp_path, "app=quadratic", "params=basic", "hydra.sweeper.n_trials=20", "hydra.sweeper.batch_size=4"
    )
    assert "The search space has 9 points only: 9 trials" in out
    assert res["best_evaluated_params"] == {"quadratic.x": 0, "quadratic.y": -1}
    assert res["n_trials"]["finished"] == 9


def test_jobs_configured_via_config_logscale(tmp_path):
    """params=logscale: y with upstream's `log_scale: true` (was ignored silently), integer [1, 4]: 12 points."""
    out, res = sweep(
        tmp_path, "app=quadratic", "params=logscale", "hydra.sweeper.n_trials=20", "hydra.sweeper.batch_size=4"
    )
    assert "quadratic.y: range=[1, 4] (log)" in out
    assert res["best_evaluated_params"] == {"quadratic.x": 0, "quadratic.y": 1}


def test_jobs_configured_via_cmd(tmp_path):
    """Command-line sweeps replace the config's parameters. Upstream expects y = 2 ("TODO: y should actually be
    -2"); ours searches the 20 points and finds (-2, -2)."""
    out, res = sweep(
        tmp_path,
        "app=quadratic",
        "params=basic",
        "quadratic.x=int(interval(-5, -2))",
        "quadratic.y=int(interval(-2, 2))",
        "hydra.sweeper.n_trials=30",
        "hydra.sweeper.batch_size=4",
    )
    assert "quadratic.x: range=[-5, -2]" in out and "quadratic.y: range=[-2, 2]" in out
    assert res["best_evaluated_params"] == {"quadratic.x": -2, "quadratic.y": -2}


def test_jobs_configured_via_cmd_logscale(tmp_path):
    """Upstream: 10000 trials with early stopping reach (-2, 0.5). Ours: the space, then 3 trials inside it."""
    assert parse_param("quadratic.y", "tag(log, interval(0.5, 3))") == Range("quadratic.y", 0.5, 3.0, "float", True)
    out, res = sweep(
        tmp_path,
        "app=quadratic",
        "params=logscale",
        "quadratic.x=int(interval(-5, -2))",
        "quadratic.y=tag(log, interval(0.5, 3))",
        "hydra.sweeper.n_trials=3",
    )
    assert "quadratic.y: range=[0.5, 3.0] (log)" in out
    best = res["best_evaluated_params"]
    assert best["quadratic.x"] in (-5, -4, -3, -2) and 0.5 <= best["quadratic.y"] <= 3.0


def test_jobs_configured_via_cmd_and_config(tmp_path):
    """x from the command line, y from params=basic. Upstream expects y = 1 ("TODO: y should actually be -1");
    ours searches the 12 points and finds (-2, -1)."""
    _, res = sweep(
        tmp_path,
        "app=quadratic",
        "params=basic",
        "quadratic.x=int(interval(-5, -2))",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.batch_size=4",
    )
    assert res["best_evaluated_params"] == {"quadratic.x": -2, "quadratic.y": -1}


def test_jobs_configured_via_cmd_and_config_logscale(tmp_path):
    _, res = sweep(
        tmp_path,
        "app=quadratic",
        "params=logscale",
        "quadratic.x=int(interval(-5, -2))",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.batch_size=4",
    )
    assert res["best_evaluated_params"] == {"quadratic.x": -2, "quadratic.y": 1}


def test_configuration_set_via_cmd_and_default_config(tmp_path):
    _, res = sweep(
        tmp_path,
        "app=quadratic",
        "quadratic=basic",
        "quadratic.x=interval(-5, -2)",
        "quadratic.y=interval(-1, 1)",
        "hydra.sweeper.n_trials=2",
    )
    assert {"quadratic.x", "quadratic.y"} <= set(res["best_evaluated_params"])


@pytest.mark.parametrize(
    "cmd_arg,expected",
    [
        ("polynomial.y=choice(-1, 0, 1)", "polynomial.y: choice=[-1, 0, 1]"),
        ("polynomial.y=range(-1, 2)", "polynomial.y: choice=[-1, 0, 1]"),
        ("polynomial.y=range(-1, 3, 1)", "polynomial.y: choice=[-1, 0, 1, 2]"),
        ("polynomial.y=range(-1, 2, 0.5)", "polynomial.y: choice=[-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]"),
        ("polynomial.y=int(interval(-1, 2))", "polynomial.y: range=[-1, 2]"),
        ("polynomial.y=interval(-1, 2)", "polynomial.y: range=[-1.0, 2.0]"),
        ("polynomial.y=2", "polynomial.y: fixed=2"),
        ("polynomial.y=2.0", "polynomial.y: fixed=2.0"),
    ],
)
def test_ax_logging(tmp_path, cmd_arg, expected):
    """The log shows every parameter with its range, choices or fixed value (once: names only)."""
    out, _ = sweep(tmp_path, "polynomial.x=interval(-5, -2)", "polynomial.z=10", "hydra.sweeper.n_trials=2", cmd_arg)
    assert "polynomial.x: range=[-5.0, -2.0]" in out
    assert expected in out
    assert "polynomial.z: fixed=10" in out
    assert "(+ baseline)" not in out  # there is none


@pytest.mark.parametrize(
    "cmd_args",
    [
        ["polynomial.y=choice(-1, 0, 1)", "polynomial.x=range(2,4)"],
        ["polynomial.y=1", "polynomial.x=range(2,4)"],
    ],
)
@pytest.mark.parametrize("n_trials", [2, 10])
def test_search_space_exhausted_exception(tmp_path, cmd_args, n_trials):
    """Upstream: no SearchSpaceExhausted with 2 trials. Ours also with a budget above the space's 6 / 2 points
    (once: SearchSpaceExhausted after exhausting it, and no trials.png): it stops cleanly with the best."""
    out, res = sweep(tmp_path, "polynomial.z=1", f"hydra.sweeper.n_trials={n_trials}", *cmd_args)
    points = 6 if "choice" in cmd_args[0] else 2
    assert "SearchSpaceExhausted" not in out and "Traceback" not in out
    assert res["n_trials"]["finished"] == min(n_trials, points)
    assert res["best_evaluated_params"]["polynomial.x"] == 2
    assert (tmp_path / "trials.png").exists() and "Best trial" in out


@pytest.mark.parametrize(
    "cmd_arg,encoding,best,value",
    [
        (
            "polynomial.coefficients=[-1, 0, 1],[2, 3, 4],[5, 6, 7]",
            "choice=['[-1,0,1]', '[2,3,4]', '[5,6,7]']",
            "'[-1,0,1]'",
            101,
        ),
        (
            "polynomial.coefficients=choice([8, 12, 11],[-1, -1, 1000], [-2, 4, 7])",
            "choice=['[8,12,11]', '[-1,-1,1000]', '[-2,4,7]']",
            "'[-2,4,7]'",
            447,
        ),
    ],
)
def test_jobs_using_choice_between_lists(tmp_path, cmd_arg, encoding, best, value):
    """Once refused ("choice values must all be bools, numbers or strings")."""
    out, res = sweep(tmp_path, "app=list", "hydra.sweeper.n_trials=3", cmd_arg, config="polynomial_with_coefficients")
    assert f"polynomial.coefficients: {encoding}" in out
    assert f"'polynomial.coefficients': {best}" in out
    assert f"value={value} with" in out  # upstream: "New best value: {value}"
    assert res["best_evaluated_result"] == value


@pytest.mark.parametrize(
    "cmd_arg,encoding,best,value",
    [
        (
            "+polynomial.coefficients=choice({x:-1, y:0, z:1},{x:2, y:3, z:4},{x:5, y:6, z:7})",
            "choice=['{x:-1,y:0,z:1}', '{x:2,y:3,z:4}', '{x:5,y:6,z:7}']",
            "'{x:-1,y:0,z:1}'",
            101,
        ),
        (
            "+polynomial.coefficients=choice({x:8, y:12, z:11},{x:-1, y:-1, z:1000}, {x:-2, y:4, z:7})",
            "choice=['{x:8,y:12,z:11}', '{x:-1,y:-1,z:1000}', '{x:-2,y:4,z:7}']",
            "'{x:-2,y:4,z:7}'}",
            447,
        ),
    ],
)
def test_jobs_using_choice_between_dicts(tmp_path, cmd_arg, encoding, best, value):
    out, _ = sweep(tmp_path, "app=dict", "hydra.sweeper.n_trials=3", cmd_arg)
    assert f"polynomial.coefficients: {encoding}" in out
    assert f"'+polynomial.coefficients': {best}" in out
    assert f"value={value} with" in out


def test_example_app(tmp_path):
    out, _ = sweep(
        tmp_path,
        "app=banana",
        "banana.x=int(interval(-5, 5))",
        "banana.y=interval(-5, 10.1)",
        "hydra.sweeper.n_trials=2",
    )
    assert "banana.x: range=[-5, 5]" in out
    assert "banana.y: range=[-5.0, 10.1]" in out


# ------------------------------------------------------------------------------------------ the defects found


def test_a_command_line_value_fixes_a_searched_parameter(tmp_path):
    """params=polynomial searches x and y; polynomial.y=5 on the command line fixes y in every job (once: Ax
    overrode it silently)."""
    out, res = sweep(tmp_path, "params=polynomial", "polynomial.y=5", "polynomial.z=0", "hydra.sweeper.n_trials=2")
    assert "polynomial.y: fixed=5" in out and "polynomial.x: range=[-1.0, 1.0]" in out
    assert set(res["best_evaluated_params"]) == {"polynomial.x"}
    for job in job_dirs(tmp_path):
        overrides = yaml.safe_load((tmp_path / job / ".hydra" / "overrides.yaml").read_text())
        assert "polynomial.y=5" in overrides and sum(o.startswith("polynomial.y=") for o in overrides) == 1


def test_a_command_line_value_fixes_a_training_parameter():
    """The same for mtrank's own space: model.net.dropout=0.1 with hparams_search=ax_multitask."""
    from helpers import compose_config

    cfg = compose_config("train", ["hparams_search=ax_multitask"])
    sw = cfg.hydra.sweeper
    s = AxSweeper(objective=sw.objective, params=sw.params, baseline=sw.baseline)
    space, fixed = s.search_space(["hparams_search=ax_multitask", "model.net.dropout=0.1"])
    assert "model.net.dropout" not in space.names and "model.net.dropout=0.1" in fixed
    assert set(s.baseline_params(space)) == set(space.names)  # the baseline arm drops the fixed parameter too
    assert "model.net.dropout: fixed=0.1" in s.described


def test_range_with_a_float_step_has_hydras_values():
    """range(0, 1, 0.1): Hydra's 10 values, not 11 by repeated addition (0.30000000000000004, 0.9999999999999999)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    p = parse_param("a", "range(0, 1, 0.1)")
    hydra_values = list(OverridesParser.create().parse_overrides(["a=range(0,1,0.1)"])[0].value().range())
    assert p == Choice("a", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), True)
    assert len(p.values) == len(hydra_values) == 10
    assert range_values(1, 0, -0.25) == [1.0, 0.75, 0.5, 0.25]
    assert range_values(0.05, 0.2, 0.05) == [0.05, 0.1, 0.15]
    assert parse_param("a", "range(1, 10, 3)") == Choice("a", (1, 4, 7), True)


def test_mapping_params_take_upstream_spellings_or_are_refused_by_name():
    assert parse_param("y", {"type": "range", "bounds": [1, 4], "log_scale": True}) == Range("y", 1, 4, "int", True)
    assert parse_param("y", {"type": "range", "bounds": [1.0, 4]}) == Range("y", 1.0, 4.0, "float", False)
    assert parse_param("y", {"type": "range", "bounds": [1, 4], "parameter_type": "float"}).kind == "float"
    assert parse_param("y", {"type": "choice", "values": ["a", "b"], "is_ordered": True}) == Choice(
        "y", ("a", "b"), True
    )
    assert parse_param("y", {"type": "fixed", "value": 3}) is None
    with pytest.raises(
        ValueError,
        match=r"hydra.sweeper.params.y: unknown key\(s\) \['logscale'\] for type range; "
        r"allowed: \['type', 'bounds', 'log', 'int', 'log_scale'",
    ):
        parse_param("y", {"type": "range", "bounds": [1, 4], "logscale": True})


def test_an_unknown_mapping_key_ends_the_sweep_with_its_name(tmp_path):
    out, _ = sweep(tmp_path, "app=quadratic", "params=bad_key", ok=False)
    assert "Error: invalid config: hydra.sweeper.params.quadratic.y: unknown key(s) ['scale'] for type range" in out
    assert "Traceback" not in out and not job_dirs(tmp_path)


@pytest.mark.parametrize("app", ["noisy", "noisy_dict"])
def test_a_mean_and_sem_are_passed_to_ax_as_a_noisy_observation(tmp_path, app):
    """A job returning (mean, sem), or a mapping holding one, completes its trial (once: failed / dropped)."""
    from ax import Client

    _, res = sweep(
        tmp_path,
        f"app={app}",
        "polynomial.x=interval(-5, -2)",
        "polynomial.y=1",
        "polynomial.z=0",
        "hydra.sweeper.n_trials=2",
    )
    assert res["n_trials"]["completed"] == 2 and res["n_trials"]["failed"] == 0
    df = Client.load_from_json_file(str(tmp_path / "ax_experiment.json"))._experiment.lookup_data().df  # noqa: SLF001
    obs = df[df["metric_name"] == "value"]
    assert len(obs) == 2 and all(math.isclose(s, 0.5) for s in obs["sem"])


def test_the_baseline_is_announced_only_when_there_is_one(tmp_path):
    out, res = sweep(
        tmp_path,
        "polynomial.x=interval(-5, -2)",
        "polynomial.y=1",
        "polynomial.z=0",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.baseline={polynomial.x: -3.0}",
    )
    assert "Ax sweep: 1 trials (+ baseline)" in out and res["baseline_params"] == {"polynomial.x": -3.0}


def test_a_baseline_arm_that_cannot_run_ends_the_sweep_with_its_message(tmp_path):
    """The baseline job's ConfigError (a UserError) ends the sweep with one block and status 2, no traceback."""
    out, res = sweep(
        tmp_path,
        "app=checked",
        "polynomial.x=interval(-5, -2)",
        "polynomial.y=1",
        "polynomial.z=0",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.baseline={polynomial.x: -5.0}",
        ok=False,
    )
    assert "Error: the baseline arm (trial 0) failed: invalid config: polynomial.x = -5.0: expected a value ≥ -4" in out
    assert "Traceback" not in out and job_dirs(tmp_path) == ["0"]


def test_ax_loop_stops_when_a_discrete_space_is_exhausted():
    """Below the sweeper's cap: AxLoop.ask returns nothing (and says why) once every point was tried, instead of
    raising SearchSpaceExhausted (which Ax finds only after about a minute of rejection sampling)."""
    from mtrank.tuning.ax_loop import AxLoop
    from mtrank.tuning.generation import GenerationConfig
    from mtrank.tuning.space import SearchSpace

    space = SearchSpace((Choice("a", (1, 2, 3), True),))
    loop = AxLoop.create(space, "value", n_trials=6, generation=GenerationConfig(method="random_search", seed=0))
    seen = []
    while batch := loop.ask(1):
        for i, params in batch.items():
            seen.append(params["a"])
            loop.tell(i, {"value": float(params["a"])})
    assert sorted(seen) == [1, 2, 3] and loop.exhausted and loop.best().params == {"a": 3}
    assert space.n_points == 3 and SearchSpace((Choice("a", (1, 2), True), Range("b", 1, 4, "int"))).n_points == 8
    assert SearchSpace((Range("b", 1, 4),)).n_points is None  # a float range: not countable
