"""Real-data results: single-task, shared bottom, MMoE and the logistic / popularity baselines on KuaiRand-Pure
and census-income, several seeds each, as Markdown tables (per-task test AUROC and PR-AUC, mean ± sd).

    # train everything that is missing (3 seeds), then write the tables into docs/data.md between the markers
    OMP_NUM_THREADS=1 python scripts/real_data_results.py --seeds 0 1 2 --out /tmp/me/real \\
        --data-dir /tmp/me/data --write docs/data.md
    # a subset, two runs at a time
    python scripts/real_data_results.py --datasets census --variants shared_bottom mmoe --jobs 2 --out /tmp/me/real
    # print the train.py commands only
    python scripts/real_data_results.py --dry-run

Every run is ``src/train.py experiment=<e> tasks=<t> <variant overrides> seed=<s>`` with its run folder at
``<out>/<dataset>/<variant>[-<task>]/seed<s>``; a run whose ``metrics.json`` exists is not run again. The
single-task baseline is the experiment's own model with ``tasks.names=[<task>]`` (same trunk, one head, its bias
started at that task's prior log-odds). The popularity baseline (per-item positive rate in train,
:mod:`mtrank.popularity`) does not depend on the seed and is computed once per data set where items repeat.
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

from mtrank.results_table import RunResult, long_table, markdown_tables  # noqa: E402


@dataclass(frozen=True)
class Dataset:
    title: str
    experiment: str  # shared bottom, single-task and logistic start from it
    mmoe: tuple[str, ...]  # the overrides that make it MMoE
    tasks_group: str
    popularity: bool  # items repeat: the popularity baseline makes sense
    labels: dict[str, str]  # task -> raw label column (for the table)


DATASETS = {
    "kuairand": Dataset(
        "KuaiRand-Pure (train 04-25..28, val 04-29, test 04-30)",
        "kuairand", ("model=mmoe_wide",), "kuairand_ext", True,
        {"click": "is_click", "long_click": "long_view", "save": "is_like", "closeup": "is_profile_enter",
         "hide": "is_hate", "follow": "is_follow", "comment": "is_comment", "share": "is_forward"},
    ),
    "census": Dataset(
        "Census-income (KDD), half A, random 60/20/20 split",
        "census", ("experiment=census_mmoe",), "census", False,
        {"income": "label_income_50k", "never_married": "label_never_married"},
    ),
}
# variant -> (column title, extra overrides)
VARIANTS = {
    "single": ("single-task", ()),
    "shared_bottom": ("shared bottom", ()),
    "mmoe": ("MMoE", ()),
    "logistic": ("logistic", ("model=logistic",)),
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


def plan(names: list[str], variants: list[str], seeds: list[int], out: Path, data_dir: str | None,
         extra: list[str]) -> list[Job]:
    jobs = []
    for name in names:
        ds = DATASETS[name]
        cfg = compose(ds, data_dir, extra)
        tasks = list(cfg.tasks.names)
        priors = dict(cfg.tasks.get("prior_logit") or {})
        base = [sys.executable, str(ROOT / "src" / "train.py"), f"experiment={ds.experiment}", f"tasks={ds.tasks_group}"]
        for variant in variants:
            if variant == "mmoe" and not (ROOT / "conf" / "model" / "mmoe.yaml").exists():
                print(f"[skip] {name}/mmoe: conf/model/mmoe.yaml does not exist", file=sys.stderr)
                continue
            per_task = tasks if variant == "single" else [None]
            for task in per_task:
                over = list(VARIANTS[variant][1])
                if variant == "mmoe":
                    over = list(ds.mmoe) + [f"tasks={ds.tasks_group}"]
                if task is not None:
                    over += [f"tasks.names=[{task}]"]
                    if task in priors:
                        over += [f"model.net.head_bias_init={priors[task]}"]
                for seed in seeds:
                    run_dir = out / name / (variant if task is None else f"{variant}-{task}") / f"seed{seed}"
                    cmd = base + over + [
                        f"seed={seed}", f"task_name=real_{name}_{variant}", f"hydra.run.dir={run_dir}",
                        "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                    ]
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
        results.append(RunResult(job.dataset, VARIANTS[job.variant][0], job.seed, metrics,
                                 tasks=[job.task] if job.task else None))
    return results


def popularity(names: list[str], data_dir: str | None, extra: list[str]) -> list[RunResult]:
    import hydra

    from mtrank.popularity import evaluate_popularity

    out = []
    for name in names:
        ds = DATASETS[name]
        if not ds.popularity:
            continue
        cfg = compose(ds, data_dir, extra)
        dm = hydra.utils.instantiate(cfg.data, _recursive_=False)
        dm.prepare_data()
        out.append(RunResult(name, POPULARITY, 0, evaluate_popularity(dm.processed)))
    return out


def render(results: list[RunResult], names: list[str], commands: str) -> str:
    table = long_table(results)
    models = [VARIANTS[v][0] for v in VARIANTS] + [POPULARITY]
    order = {n: list(DATASETS[n].labels) for n in names}
    labels = {n: {t: f"{t} (`{c}`)" for t, c in DATASETS[n].labels.items()} for n in names}
    tables = markdown_tables(table, models, tasks=order, task_labels=labels)
    parts = []
    for n in names:
        for metric, title in (("auroc", "test AUROC"), ("pr_auc", "test PR-AUC (average precision)")):
            if (n, metric) in tables:
                parts.append(f"**{DATASETS[n].title}: {title}**, mean ± sd over seeds\n\n{tables[(n, metric)]}\n")
    parts.append(f"Produced by:\n\n```\n{commands}\n```\n")
    return "\n".join(parts)


def write_between_markers(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS) + [POPULARITY], choices=list(VARIANTS) + [POPULARITY])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "logs" / "real_data"), help="run folders go under it")
    p.add_argument("--data-dir", default=None, help="paths.data_dir of every run (processed-data cache)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--write", default=None, help="a Markdown file: the tables replace the text between its markers")
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
    cmd = "OMP_NUM_THREADS=1 python scripts/real_data_results.py " + " ".join(
        [f"--datasets {' '.join(args.datasets)}", f"--seeds {' '.join(map(str, args.seeds))}"]
        + ([f"--variants {' '.join(args.variants)}"] if set(args.variants) != set(VARIANTS) | {POPULARITY} else [])
        + list(args.overrides)
    )
    text = render(results, args.datasets, cmd)
    print(text)
    (out / "results.md").parent.mkdir(parents=True, exist_ok=True)
    long_table(results).write_csv(out / "results_long.csv")
    (out / "results.md").write_text(text)
    if args.write:
        write_between_markers(Path(args.write), text)
    for j in failed:
        print(f"FAILED: {j.run_dir} (see its stdout.log)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
