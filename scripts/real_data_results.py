"""Real-data results: single-task, shared bottom, MMoE, the nets' own ``model=logistic``, LightGBM, a
scikit-learn logistic regression and item popularity on KuaiRand-Pure and census-income, several seeds each, as
Markdown tables (per-task test AUROC and PR-AUC, mean ± sd). One command gives the table of the README.

    # train everything that is missing (3 seeds), then write the tables into README.md and docs/data.md
    OMP_NUM_THREADS=1 python scripts/real_data_results.py --seeds 0 1 2 --out /tmp/me/real \\
        --data-dir /tmp/me/data --write README.md docs/data.md
    # the baselines alone
    python scripts/real_data_results.py --variants lightgbm sklearn_logistic --out /tmp/me/real
    # a subset, two runs at a time
    python scripts/real_data_results.py --datasets census --variants shared_bottom mmoe --jobs 2 --out /tmp/me/real
    # print the train.py commands only
    python scripts/real_data_results.py --dry-run

Every net is ``src/train.py experiment=<e> tasks=<t> <variant overrides> seed=<s>`` and every baseline
``src/baselines.py experiment=<e> tasks=<t> baseline=<lightgbm|logistic> seed=<s>`` (same processed splits and
features, :mod:`mtrank.baselines`), with its run folder at ``<out>/<dataset>/<variant>[-<task>]/seed<s>``; a run
whose ``metrics.json`` exists is not run again. The single-task baseline is the data set's shared bottom (the
experiment's own model, or ``Dataset.shared_bottom``'s overrides) with ``tasks.names=[<task>]`` (same trunk, one head,
its bias started at that task's prior log-odds). The scikit-learn
logistic regression is deterministic (its seeds give the same figures, sd 0). The popularity baseline (per-item
positive rate in train, :mod:`mtrank.scoring.popularity`) does not depend on the seed and is computed once per data set
where items repeat. The table titles describe the splits the runs used (cut points or fractions, input files and
rows per split, from the processed data's ``metadata.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import polars as pl  # noqa: E402

from mtrank.scoring.results_table import RunResult, long_table, markdown_tables  # noqa: E402


@dataclass(frozen=True)
class Dataset:
    title: str  # the data set's name; the splits are described from the processed data (split_description)
    experiment: str  # shared bottom, single-task and logistic start from it
    mmoe: tuple[str, ...]  # the overrides that make it MMoE
    tasks_group: str
    popularity: bool  # items repeat: the popularity baseline makes sense
    labels: dict[str, str]  # task -> raw label column (for the table)
    shared_bottom: tuple[str, ...] = ()  # the overrides that make it the shared bottom (also of the single-task nets)
    ple: tuple[str, ...] | None = None  # the overrides that make it PLE (None: no PLE column)


DATASETS = {
    "kuairand": Dataset(
        "KuaiRand-Pure",
        "kuairand",
        ("model=mmoe_wide",),
        "kuairand_ext",
        True,
        {
            "click": "is_click",
            "long_click": "long_view",
            "save": "is_like",
            "closeup": "is_profile_enter",
            "hide": "is_hate",
            "follow": "is_follow",
            "comment": "is_comment",
            "share": "is_forward",
        },
        shared_bottom=("model=shared_bottom_wide_kuairand",),
        ple=(),  # experiment=kuairand's own model
    ),
    "census": Dataset(
        "Census-income (KDD)",
        "census",
        ("experiment=census_mmoe",),
        "census",
        False,
        {"income": "label_income_50k", "never_married": "label_never_married"},
    ),
}
# variant -> (column title, extra overrides, entry point under src/)
VARIANTS = {
    "single": ("single-task", (), "train.py"),
    "shared_bottom": ("shared bottom", (), "train.py"),
    "mmoe": ("MMoE", (), "train.py"),
    "ple": ("PLE", (), "train.py"),
    "logistic": ("`model=logistic`", ("model=logistic",), "train.py"),
    "lightgbm": ("LightGBM", ("baseline=lightgbm",), "baselines.py"),
    "sklearn_logistic": ("logistic regression (scikit-learn)", ("baseline=logistic",), "baselines.py"),
}
POPULARITY = "popularity"
BEGIN, END = "<!-- real_data_results:begin -->", "<!-- real_data_results:end -->"


def compose(dataset: Dataset, data_dir: str | None, extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    overrides = [f"experiment={dataset.experiment}", f"tasks={dataset.tasks_group}", *extra]
    if data_dir:
        overrides.append(f"paths.data_dir={data_dir}")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return hydra_compose(config_name="train", overrides=overrides)


@dataclass(frozen=True)
class Job:
    dataset: str
    variant: str
    task: str | None
    seed: int
    run_dir: Path
    command: tuple[str, ...]


def plan(
    names: list[str], variants: list[str], seeds: list[int], out: Path, data_dir: str | None, extra: list[str]
) -> list[Job]:
    jobs = []
    for name in names:
        ds = DATASETS[name]
        cfg = compose(ds, data_dir, extra)
        tasks = list(cfg.tasks.names)
        priors = dict(cfg.tasks.get("prior_logit") or {})
        for variant in variants:
            entry = VARIANTS[variant][2]
            base = [sys.executable, str(ROOT / "src" / entry), f"experiment={ds.experiment}", f"tasks={ds.tasks_group}"]
            if variant == "mmoe" and not (ROOT / "conf" / "model" / "mmoe.yaml").exists():
                print(f"[skip] {name}/mmoe: conf/model/mmoe.yaml does not exist", file=sys.stderr)
                continue
            if variant == "ple" and ds.ple is None:
                continue
            per_task = tasks if variant == "single" else [None]
            for task in per_task:
                over = list(VARIANTS[variant][1])
                if variant == "mmoe":
                    over = list(ds.mmoe) + [f"tasks={ds.tasks_group}"]
                elif variant == "ple":
                    over = list(ds.ple)
                elif variant in ("shared_bottom", "single"):
                    over = list(ds.shared_bottom)
                if task is not None:
                    over += [f"tasks.names=[{task}]"]
                    if task in priors:
                        over += [f"model.net.head_bias_init={priors[task]}"]
                for seed in seeds:
                    run_dir = out / name / (variant if task is None else f"{variant}-{task}") / f"seed{seed}"
                    cmd = base + over + [f"seed={seed}", f"task_name=real_{name}_{variant}", f"hydra.run.dir={run_dir}"]
                    if entry == "train.py":
                        cmd += ["trainer.enable_progress_bar=false", "~callbacks.progress_bar"]
                    if data_dir:
                        cmd.append(f"paths.data_dir={data_dir}")
                    jobs.append(Job(name, variant, task, seed, run_dir, tuple(cmd + extra)))
    return jobs


def run_job(job: Job) -> tuple[Job, int]:
    if (job.run_dir / "metrics.json").exists():
        return job, 0
    job.run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # a small model on a shared CPU: more threads only contend
    with open(job.run_dir / "stdout.log", "w") as fh:
        rc = subprocess.call(list(job.command), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    print(f"[{'ok' if rc == 0 else f'FAILED rc={rc}'}] {job.run_dir}", flush=True)
    return job, rc


def collect(jobs: list[Job]) -> list[RunResult]:
    results = []
    for job in jobs:
        path = job.run_dir / "metrics.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text())["metrics"]
        results.append(
            RunResult(job.dataset, VARIANTS[job.variant][0], job.seed, metrics, tasks=[job.task] if job.task else None)
        )
    return results


def processed_data(name: str, data_dir: str | None, extra: list[str]):
    """The processed data set every run of ``name`` trains on (the cache the runs share; built if missing)."""
    import hydra

    dm = hydra.utils.instantiate(compose(DATASETS[name], data_dir, extra).data, _recursive_=False)
    dm.prepare_data()
    return dm.processed


def popularity(names: list[str], data_dir: str | None, extra: list[str]) -> list[RunResult]:
    from mtrank.scoring.popularity import evaluate_popularity

    return [
        RunResult(n, POPULARITY, 0, evaluate_popularity(processed_data(n, data_dir, extra)))
        for n in names
        if DATASETS[n].popularity
    ]


def _instant(us: int) -> str:
    from datetime import datetime, timedelta

    t = datetime(1970, 1, 1) + timedelta(microseconds=int(us))  # the cut point on the wall clock of time_zone
    return t.strftime("%Y-%m-%d") if t.time() == datetime.min.time() else t.strftime("%Y-%m-%d %H:%M:%S")


def split_description(meta: dict) -> str:
    """The splits a processed data set holds, from its ``metadata.json``: how they were cut (time cut points,
    fractions by time, or request / row hashes with their seed), the input files by name, and the rows of each."""
    cfg = meta["config"]
    split, cols = cfg["split"], cfg["columns"]
    rows = {s: int(meta["splits"][s]["rows"]) for s in ("train", "val", "test")}
    cuts = meta.get("time_cut_points_us") or {}
    if split["by"] == "time" and cuts:
        zone = f", {cols['time_zone']} time" if cols.get("time_zone") and cols.get("time_unit") else ""
        how = (
            f"split by `{cols['time']}`{zone}: train before {_instant(cuts['val'])}, val from {_instant(cuts['val'])}"
            f", test from {_instant(cuts['test'])}"
        )
    elif split["by"] == "time":
        how = (
            f"split by `{cols['time']}`: the latest {split['test_fraction']:.0%} of requests test, the "
            f"{split['val_fraction']:.0%} before them val"
        )
    else:
        unit = "row" if split["by"] == "random" else "request"
        train_frac = 1 - split["val_fraction"] - split["test_fraction"]
        how = (
            f"split at random by {unit} hash (seed {split['seed']}), {train_frac:.0%}/{split['val_fraction']:.0%}/"
            f"{split['test_fraction']:.0%}"
        )
    files = (meta.get("source") or {}).get("files") or {}
    named = {k: ", ".join(f"`{Path(f).name}`" for f in v) for k, v in files.items() if v}
    src = "; ".join(("" if k == "all" else f"{k}: ") + v for k, v in named.items())
    counts = ", ".join(f"{s} {rows[s]:,}" for s in rows)
    return f"{src}, {how}; rows: {counts}" if src else f"{how}; rows: {counts}"


def render(results: list[RunResult], names: list[str], commands: str, splits: dict[str, str] | None = None) -> str:
    table = long_table(results)
    models = [VARIANTS[v][0] for v in VARIANTS] + [POPULARITY]
    order = {n: list(DATASETS[n].labels) for n in names}
    labels = {n: {t: f"{t} (`{c}`)" for t, c in DATASETS[n].labels.items()} for n in names}
    tables = markdown_tables(table, models, tasks=order, task_labels=labels)
    parts = []
    for n in names:
        where = f". Splits: {splits[n]}" if splits and n in splits else ""
        for metric, title in (("auroc", "test AUROC"), ("pr_auc", "test PR-AUC (average precision)")):
            if (n, metric) in tables:
                parts.append(
                    f"**{DATASETS[n].title}: {title}**, mean ± sd over seeds{where}\n\n{tables[(n, metric)]}\n"
                )
    parts.append(f"Produced by:\n\n```\n{commands}\n```\n")
    return "\n".join(parts)


def shown_path(path: str) -> str:
    """A path for the "Produced by" line: relative to the repository when inside it, else as given."""
    for p in (Path(os.path.abspath(path)), Path(path).resolve()):  # as written, then with links followed
        try:
            return str(p.relative_to(ROOT))
        except ValueError:
            pass
    return path


def produced_by(args: argparse.Namespace) -> str:
    """The command that reproduces the tables, with every flag that changes what they hold."""
    parts = [f"--datasets {' '.join(args.datasets)}", f"--seeds {' '.join(map(str, args.seeds))}"]
    if set(args.variants) != set(VARIANTS) | {POPULARITY}:
        parts.append(f"--variants {' '.join(args.variants)}")
    parts.append(f"--out {shown_path(args.out)}")
    if args.data_dir:
        parts.append(f"--data-dir {shown_path(args.data_dir)}")
    if args.jobs != 1:
        parts.append(f"--jobs {args.jobs}")
    return "OMP_NUM_THREADS=1 python scripts/real_data_results.py " + " ".join(parts + list(args.overrides))


def write_between_markers(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS) + [POPULARITY], choices=list(VARIANTS) + [POPULARITY]
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "logs" / "real_data"), help="run folders go under it")
    p.add_argument("--data-dir", default=None, help="paths.data_dir of every run (processed-data cache)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument(
        "--write",
        nargs="+",
        default=[],
        help="Markdown files (e.g. README.md docs/data.md): the tables replace the text between their markers",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.max_epochs=3")
    args = p.parse_args(argv)

    out = Path(args.out)
    trained = [v for v in args.variants if v != POPULARITY]
    jobs = plan(args.datasets, trained, args.seeds, out, args.data_dir, args.overrides)
    if args.dry_run:
        for j in jobs:
            print(" ".join(j.command))
        return 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        failed = [j for j, rc in pool.map(run_job, jobs) if rc != 0]
    results = collect(jobs)
    if POPULARITY in args.variants:
        results += popularity(args.datasets, args.data_dir, args.overrides)
    splits = {n: split_description(processed_data(n, args.data_dir, args.overrides).metadata) for n in args.datasets}
    text = render(results, args.datasets, produced_by(args), splits)
    print(text)
    (out / "results.md").parent.mkdir(parents=True, exist_ok=True)
    pl.concat([long_table(results, stage=s).with_columns(pl.lit(s).alias("stage")) for s in ("val", "test")]).write_csv(
        out / "results_long.csv"
    )
    (out / "results.md").write_text(text)
    for path in args.write:
        write_between_markers(Path(path), text)
    for j in failed:
        print(f"FAILED: {j.run_dir} (see its stdout.log)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
