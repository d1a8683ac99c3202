"""Optuna tuning on MovieLens 100K (issue #10 §4): default vs tuned, pruning, one vs two workers.

Every fit and evaluation goes through the project's own nodes and library calls, on the split the
project's default `splitting` parameters give (conf/base/parameters_splitting.yml: temporal
80/10/10, 3-core): the base parameters are conf/base/parameters_training.yml[family], the studies
are conf/base/parameters_tuning.yml[tuning][family] (space, metric, pruner, sampler, seed), and
the tuned model is refit with `best_params()` exactly as the `tuned` pipeline does
(`make_fit_tuned_model`: train, early stopping on valid), then evaluated on test with
`evaluate_recommender` (full ranking, training items masked), plus `evaluate_sessions` for
next-item families. neumf warm-starts from gmf and mlp trained first at their defaults. Each run is
one fresh process with one torch thread; the 1-minute load average is sampled around and during
every run (the machine is shared).

    # all three figures as in bench/RESULTS.md: 1. default vs tuned (each study's own n_trials
    # and timeout unless --trials / --timeout); 2. the bpr study with pruner median and none;
    # 3. one worker x 30 trials vs two workers x 15 on one SQLite file
    .venv/bin/python bench/bench_tuning.py --study-trials 30
    .venv/bin/python bench/bench_tuning.py --figures default_vs_tuned --families bpr mf
    # a quick check of every path, written elsewhere
    .venv/bin/python bench/bench_tuning.py --trials 2 --study-trials 2 --out /tmp/tuning_check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/movielens-100k"
FAMILIES = ("bpr", "neumf", "sasrec", "mf")
FIGURES = ("default_vs_tuned", "pruning", "workers")


def _conf(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "conf/base" / name).read_text())


# ----------------------------------------------------------------------------- in a worker process
def load_split(path: Path) -> dict[str, Any]:
    """ML-100K through the project's filters and splits with the default splitting parameters."""
    from recforge.data.filters import filter_interactions
    from recforge.data.movielens import MovieLensConfig, load_movielens100k
    from recforge.data.splits import SplitConfig, split_interactions

    interactions, _, _ = load_movielens100k(MovieLensConfig(raw_dir=path, download=False))
    config = SplitConfig.model_validate(_conf("parameters_splitting.yml")["splitting"])
    s = split_interactions(filter_interactions(interactions, config), None, config)
    return {"train": s.train, "valid": s.valid, "test": s.test,
            "user_map": s.user_map.to_frame(), "item_map": s.item_map.to_frame()}  # fmt: skip


def tuning_block(family: str, trials: int | None, timeout: float | None, **over: Any) -> dict[str, Any]:
    """The family's default study block with the bench's overrides (timeout 0: none)."""
    block = dict(_conf("parameters_tuning.yml")["tuning"][family])
    if trials is not None:
        block["n_trials"] = trials
    if timeout is not None:
        block["timeout"] = timeout or None
    block.update(over)
    return block


def run_study(family: str, split: dict, tuning: dict, storage: str, name: str, upstream: list) -> Any:
    """`tune` with the inputs the `tuning` node gives it (train, valid, seen, warm_start)."""
    from recforge.pipelines.training.nodes import fit_inputs
    from recforge.training.recommender import uses_ratings
    from recforge.tuning.study import plan_study, tune

    base = _conf("parameters_training.yml")[family]
    plan = plan_study(family, base["model"], base["training"], tuning)
    model = plan.family.config.model_validate(plan.base_model)
    inputs = fit_inputs(family, model, uses_ratings(plan.family, model), split["train"], split["valid"],
                        split["user_map"], split["item_map"], upstream)  # fmt: skip
    return tune(plan, inputs["train"], inputs["valid"], storage, name=name, seen=inputs["seen"],
                item_vectors=inputs["item_vectors"], warm_start=inputs["warm_start"])  # fmt: skip


def valid_metric(rec: Any, split: dict, metric: str) -> float:
    """The study's metric of a fitted model on the valid split, as a trial measures it."""
    from recforge.data.interactions import InteractionData
    from recforge.evaluation.selection import make_validator

    valid = InteractionData.from_frame(split["valid"], len(split["user_map"]), len(split["item_map"]), name="valid")
    return make_validator(rec, valid, [metric])(rec.network)[metric]


def test_metrics(family: str, rec: Any, split: dict) -> dict[str, Any]:
    """What the evaluation nodes report on test, and for next-item families the study's metric."""
    from recforge.data.interactions import InteractionData
    from recforge.evaluation.report import EvaluationConfig
    from recforge.evaluation.selection import make_validator
    from recforge.pipelines.evaluation.nodes import evaluate_model, evaluate_session_model

    evaluation = EvaluationConfig.model_validate(_conf("parameters_evaluation.yml")["evaluation"])
    t = time.perf_counter()
    m = evaluate_model(rec, split["train"], split["test"], split["user_map"], split["item_map"], evaluation)
    out: dict[str, Any] = {"full": m["full"], "rating": m.get("rating"), "fit": m.get("fit")}
    if rec.family.next_item:
        s = evaluate_session_model(rec, split["train"], split["test"], split["user_map"], split["item_map"], evaluation)
        out["sessions"] = s
        # ML-100K has no sessions: the study's next_item_mrr@20 reads each known user's valid
        # events in time order as one session; the same on the test split
        test = InteractionData.from_frame(split["test"], len(split["user_map"]), len(split["item_map"]), name="test")
        out["next_item_mrr@20"] = make_validator(rec, test, ["next_item_mrr@20"])(rec.network)["next_item_mrr@20"]
    out["eval_s"] = time.perf_counter() - t
    return out


def fit_default(family: str, split: dict, upstream: list) -> Any:
    """The `training` node at the family's default parameters."""
    from recforge.models.registry import get_family
    from recforge.pipelines.training.nodes import make_fit_model
    from recforge.training.config import TrainConfig

    base = _conf("parameters_training.yml")[family]
    model = get_family(family).config.model_validate(base["model"])
    training = TrainConfig.model_validate(base["training"])
    return make_fit_model(family)(split["train"], split["valid"], split["user_map"], split["item_map"],
                                  model, training, *upstream)  # fmt: skip


def study_row(result: Any) -> dict[str, Any]:
    from recforge.tuning import report

    best = result.best_params()
    table = report.trials_table(result)
    trials = json.loads(table.to_json(orient="records"))
    return {"best_params": best, "trials": trials}


def one_family(args: argparse.Namespace) -> dict[str, Any]:
    """Figure 1 for one family: default fit, study on valid, refit with best_params, test."""
    from recforge.models.registry import get_family
    from recforge.pipelines.tuned.nodes import make_fit_tuned_model
    from recforge.tuning.storage import sqlite_url

    family = args.one
    split = load_split(args.path)
    out: dict[str, Any] = {"figure": "default_vs_tuned", "family": family}
    upstream: list = []
    t = time.perf_counter()
    for name in get_family(family).warm_start_from:  # neumf: gmf and mlp at their defaults
        rec = fit_default(name, split, [])
        out[f"{name}_fit_s"] = rec.fit_seconds
        upstream.append(rec)
    out["upstream_s"] = time.perf_counter() - t
    t = time.perf_counter()
    default = fit_default(family, split, upstream)
    out["default_fit_wall_s"] = time.perf_counter() - t
    out["default"] = test_metrics(family, default, split)
    tuning = tuning_block(family, args.trials, args.timeout)
    out["tuning"] = tuning
    result = run_study(family, split, tuning, sqlite_url(args.storage), family, upstream)
    out.update(study_row(result))
    metric = out["best_params"]["metric"]
    out["default"]["valid"] = {metric: valid_metric(default, split, metric)}
    t = time.perf_counter()
    tuned = make_fit_tuned_model(family)(split["train"], split["valid"], split["user_map"], split["item_map"],
                                         out["best_params"], *upstream)  # fmt: skip
    out["tuned_fit_wall_s"] = time.perf_counter() - t
    out["tuned"] = test_metrics(family, tuned, split)
    out["tuned"]["valid"] = {metric: valid_metric(tuned, split, metric)}
    return out


def one_study(args: argparse.Namespace) -> dict[str, Any]:
    """Figures 2 and 3: `n_trials` trials of one study on the shared storage (no timeout)."""
    from recforge.tuning.storage import sqlite_url

    split = load_split(args.path)
    tuning = tuning_block(args.study, args.study_trials, 0, pruner=args.pruner)
    result = run_study(args.study, split, tuning, sqlite_url(args.storage), args.study_name, [])
    return {"tuning": tuning, **study_row(result)}


# ----------------------------------------------------------------------------- the driver
class LoadSampler:
    """The 1-minute load average before, every 5 s during, and after a run."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> LoadSampler:
        self.before = os.getloadavg()[0]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.after = os.getloadavg()[0]

    def summary(self) -> dict[str, float]:
        seen = [self.before, *self.samples, self.after]
        return {"load_before": self.before, "load_after": self.after, "load_max": max(seen),
                "load_mean": sum(seen) / len(seen)}  # fmt: skip


def _child(args: argparse.Namespace, *extra: str) -> list[str]:
    return [sys.executable, __file__, "--path", str(args.path), *extra]


def _start(cmd: list[str]) -> subprocess.Popen:
    # one torch thread per process (set in main, before any op); stderr (the study's log) passes through
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _finish(proc: subprocess.Popen) -> dict[str, Any]:
    stdout, _ = proc.communicate()
    if proc.returncode:
        return {"error": f"exit {proc.returncode}", "stdout_tail": stdout[-2000:]}
    return json.loads(stdout.strip().splitlines()[-1])


def study_summary(storage: str, name: str) -> dict[str, Any]:
    """Counts and best value of a study as the storage holds it (after several workers)."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state.name.lower() for t in study.trials]
    return {"n_trials": len(states), **{f"n_{s}": states.count(s) for s in ("complete", "pruned", "fail")},
            "best_value": study.best_value, "best_trial": study.best_trial.number,
            "best_params": study.best_trial.params}  # fmt: skip


def machine() -> dict[str, Any]:
    import optuna
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "optuna": optuna.__version__, "torch_threads_per_process": 1}  # fmt: skip


def drive(args: argparse.Namespace) -> None:
    from recforge.tuning.storage import sqlite_url

    out_json, out_md = Path(f"{args.out}.json"), Path(f"{args.out}.md")
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    meta = {"command": " ".join([".venv/bin/python", "bench/bench_tuning.py", *sys.argv[1:]]), "machine": machine(),
            "data": str(args.path), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip

    def save() -> None:
        meta["total_wall_s"] = time.perf_counter() - started
        out_json.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
        out_md.write_text(markdown(meta, runs))

    with tempfile.TemporaryDirectory(prefix="bench_tuning_") as tmp:
        if "default_vs_tuned" in args.figures:
            for family in args.families:
                db = Path(tmp) / f"{family}.db"
                with LoadSampler() as load:
                    t = time.perf_counter()
                    cmd = _child(args, "--one", family, "--storage", str(db))
                    if args.trials is not None:
                        cmd += ["--trials", str(args.trials)]
                    if args.timeout is not None:
                        cmd += ["--timeout", str(args.timeout)]
                    row = _finish(_start(cmd))
                    row["wall_s"] = time.perf_counter() - t
                row.update(figure="default_vs_tuned", family=family, **load.summary())
                runs.append(row)
                save()
                print(json.dumps({k: row.get(k) for k in ("family", "wall_s", "error")}), flush=True)
        if "pruning" in args.figures:
            for pruner in ("median", "none"):
                db = Path(tmp) / f"pruning_{pruner}.db"
                with LoadSampler() as load:
                    t = time.perf_counter()
                    row = _finish(_start(_child(args, "--study", args.study_family, "--pruner", pruner,
                                                "--study-trials", str(args.study_trials), "--storage", str(db),
                                                "--study-name", f"{args.study_family}.pruning_{pruner}")))  # fmt: skip
                    row["wall_s"] = time.perf_counter() - t
                row.update(figure="pruning", family=args.study_family, pruner=pruner, **load.summary())
                runs.append(row)
                save()
                print(json.dumps({k: row.get(k) for k in ("figure", "pruner", "wall_s", "error")}), flush=True)
        if "workers" in args.figures:
            from recforge.tuning.study import plan_study

            base = _conf("parameters_training.yml")[args.study_family]
            direction = plan_study(args.study_family, base["model"], base["training"],
                                   tuning_block(args.study_family, None, None)).directions
            for workers in (1, 2):
                db = Path(tmp) / f"workers_{workers}.db"
                name = f"{args.study_family}.workers_{workers}"
                per_worker = args.study_trials // workers
                # the study is created before the workers start, so neither races to create it
                import optuna

                optuna.create_study(study_name=name, storage=sqlite_url(db), directions=direction)
                with LoadSampler() as load:
                    t = time.perf_counter()
                    procs = [_start(_child(args, "--study", args.study_family, "--pruner", args.workers_pruner,
                                           "--study-trials", str(per_worker), "--storage", str(db),
                                           "--study-name", name)) for _ in range(workers)]  # fmt: skip
                    results = [_finish(p) for p in procs]
                    wall = time.perf_counter() - t
                row = {"figure": "workers", "family": args.study_family, "workers": workers,
                       "trials_per_worker": per_worker, "pruner": args.workers_pruner, "wall_s": wall,
                       "workers_detail": results, "study": study_summary(sqlite_url(db), name), **load.summary()}  # fmt: skip
                runs.append(row)
                save()
                print(json.dumps({k: row.get(k) for k in ("figure", "workers", "wall_s")}), flush=True)
    save()
    print(f"total {meta['total_wall_s']:.1f} s; wrote {out_json} and {out_md}", flush=True)


# ----------------------------------------------------------------------------- the tables
def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(meta: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    m = meta["machine"]
    lines = [
        "# Tuning on ML-100K (issue #10)", "",
        f"Command: `{meta['command']}` (started {meta['started']}, total {meta.get('total_wall_s', 0):.1f} s).",
        f"Machine: nproc {m['nproc']}, {m['cpu']}, Python {m['python']}, torch {m['torch']}, optuna {m['optuna']}, "
        "one torch thread per process. Load = 1-minute load average before / max during / after the run.", "",
    ]  # fmt: skip
    fig1 = [r for r in runs if r["figure"] == "default_vs_tuned"]
    if fig1:
        lines += [
            "## Default vs tuned (test split)", "",
            "| family | params | ndcg@10 | hr@10 | rmse | mae | next-item mrr@20 | user-seq ndcg@10 | fit s | "
            "epochs | trials (complete / pruned / failed) | tuning s | best trial (valid) | refit (valid) | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for r in fig1:
            if "error" in r:
                lines.append(f"| {r['family']} | error: {r['error']} |" + " |" * 13)
                continue
            b = r["best_params"]
            for which in ("default", "tuned"):
                t = r[which]
                user = (t.get("sessions") or {}).get("user_sequences", {}).get("full", {})
                rating = t.get("rating") or {}
                study = (f"{b['n_trials']} ({b['n_complete']} / {b['n_pruned']} / {b['n_failed']})"
                         if which == "tuned" else "")  # fmt: skip
                lines.append(
                    f"| {r['family']} | {which} | {_f(t['full'].get('ndcg@10'))} | {_f(t['full'].get('hr@10'))} | "
                    f"{_f(rating.get('rmse'))} | {_f(rating.get('mae'))} | {_f(t.get('next_item_mrr@20'))} | "
                    f"{_f(user.get('ndcg@10'))} | {_f((t.get('fit') or {}).get('seconds'), 1)} | "
                    f"{_f((t.get('fit') or {}).get('epochs'))} | {study} | "
                    f"{_f(b['tuning_seconds'], 1) if which == 'tuned' else ''} | "
                    f"{_f(b['best_value']) if which == 'tuned' else ''} | {_f(t['valid'][b['metric']])} | "
                    f"{_f(r['load_before'], 2)} / {_f(r['load_max'], 2)} / {_f(r['load_after'], 2)} |"
                )
        users = {r["family"]: r["default"]["full"].get("n_users") for r in fig1 if "error" not in r}
        lines += ["", f"Test users with a training history (full ranking): {json.dumps(users)}.",
                  "", "Best parameters per family (the tuned keys):", ""]
        for r in fig1:
            if "error" not in r:
                b = r["best_params"]
                keys = {k: b[k.split(".")[0]][k.split(".", 1)[1]] for k in b["tuned_keys"]}
                lines.append(f"- {r['family']} ({b['metric']}, {r['tuning'].get('n_trials')} trials, timeout "
                             f"{r['tuning'].get('timeout')} s, wall {r['wall_s']:.1f} s in all): `{json.dumps(keys)}`")  # fmt: skip
        lines.append("")
    fig2 = [r for r in runs if r["figure"] == "pruning"]
    if fig2:
        lines += ["## Pruning: the same study with pruner median and none", "",
                  "| family | pruner | trials | complete | pruned | failed | tuning s | best valid | load |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in fig2:
            if "error" in r:
                lines.append(f"| {r['family']} | {r['pruner']} | error: {r['error']} |" + " |" * 6)
                continue
            b = r["best_params"]
            lines.append(f"| {r['family']} | {r['pruner']} | {b['n_trials']} | {b['n_complete']} | {b['n_pruned']} | "
                         f"{b['n_failed']} | {b['tuning_seconds']:.1f} | {_f(b['best_value'])} | "
                         f"{_f(r['load_before'], 2)} / {_f(r['load_max'], 2)} / {_f(r['load_after'], 2)} |")  # fmt: skip
        lines.append("")
    fig3 = [r for r in runs if r["figure"] == "workers"]
    if fig3:
        lines += ["## One worker vs two on one SQLite study", "",
                  "| family | workers × trials | pruner | wall s | per-worker tuning s | trials | complete | pruned | "
                  "failed | best valid | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in fig3:
            s = r["study"]
            per = ", ".join(_f(w.get("best_params", {}).get("tuning_seconds"), 1) if "error" not in w else w["error"]
                            for w in r["workers_detail"])  # fmt: skip
            lines.append(f"| {r['family']} | {r['workers']} × {r['trials_per_worker']} | {r['pruner']} | "
                         f"{r['wall_s']:.1f} | {per} | {s['n_trials']} | {s['n_complete']} | {s['n_pruned']} | "
                         f"{s['n_fail']} | {_f(s['best_value'])} | "
                         f"{_f(r['load_before'], 2)} / {_f(r['load_max'], 2)} / {_f(r['load_after'], 2)} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", type=Path, default=DEFAULT_DATA, help="folder with u.data, u.item, u.user")
    ap.add_argument("--figures", nargs="*", choices=FIGURES, default=list(FIGURES))
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--trials", type=int, help="n_trials of every figure-1 study (default: its block's)")
    ap.add_argument("--timeout", type=float, help="timeout of every figure-1 study in s, 0 = none (default: its block's)")
    ap.add_argument("--study-family", default="bpr", help="the family of the pruning and workers figures")
    ap.add_argument("--study-trials", type=int, default=12, help="trials of the pruning and workers studies (in all)")
    ap.add_argument("--workers-pruner", default="median", choices=["median", "none"])
    ap.add_argument("--out", default=str(ROOT / "bench/results/tuning"), help="writes OUT.json and OUT.md")
    # a child process's own work
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--study", help=argparse.SUPPRESS)
    ap.add_argument("--study-name", help=argparse.SUPPRESS)
    ap.add_argument("--pruner", help=argparse.SUPPRESS)
    ap.add_argument("--storage", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one or args.study:
        import torch

        torch.set_num_threads(1)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
        print(json.dumps(one_family(args) if args.one else one_study(args)), flush=True)
        return
    drive(args)


if __name__ == "__main__":
    main()
