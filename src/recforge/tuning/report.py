"""Reports of a study: the trials table (parquet + Markdown) and matplotlib figures (optimisation
history, parameter importance, parallel coordinates, and the Pareto front of a two-objective
study), so nothing needs a browser engine to render them."""

from __future__ import annotations

import json
import logging
import math
import warnings
from typing import Any

import numpy as np
import optuna
import pandas as pd

from recforge.tuning.study import TuningResult

logger = logging.getLogger(__name__)


def _figure(width: float = 8.0, height: float = 4.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def trials_table(result: TuningResult) -> pd.DataFrame:
    """One row per trial of the study: number, state, objective value(s), duration, epochs, the
    sampled parameters (`model.*`, `training.*`, lists as JSON text) and why it failed."""
    names = result.plan.objective_names
    rows = []
    for t in result.study.trials:
        row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower()}
        values = t.values or [None] * len(names)
        for n, v in zip(names, values, strict=True):
            row[n] = v
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            last = max(t.intermediate_values)
            row[names[0]] = t.intermediate_values[last]  # the value it was pruned at
        start, end = t.datetime_start, t.datetime_complete
        row["duration_s"] = (end - start).total_seconds() if start and end else None
        row["epochs"] = t.user_attrs.get("epochs", len(t.intermediate_values) or None)
        row["best_epoch"] = t.user_attrs.get("best_epoch")
        row["this_run"] = t.number in result.run_trials
        for k, v in t.params.items():
            row[k] = json.dumps(v) if isinstance(v, list | dict) else v
        row["fail_reason"] = t.user_attrs.get("fail_reason")
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in table.columns:
        if table[col].dtype == object:
            # mixed params (e.g. a categorical of numbers and null) stay readable in parquet
            if not all(isinstance(v, (int, float, bool)) or v is None for v in table[col]):
                table[col] = table[col].map(lambda v: None if v is None else str(v)).astype("string")
    return table


def trials_markdown(result: TuningResult, table: pd.DataFrame) -> str:
    """The study summary and its trials as a Markdown page."""
    best = result.best_params()
    lines = [
        f"# Tuning: {best['family']}",
        "",
        f"- study `{best['study_name']}` in `{best['storage']}`",
        f"- objective(s): {', '.join(best['objectives'])} on the valid split ({best['direction']} {best['metric']})",
        f"- trials: {best['n_trials']} finished ({best['n_complete']} complete, {best['n_pruned']} pruned, "
        f"{best['n_failed']} failed); this run added {best['run_trials']} in {best['tuning_seconds']:.1f} s",
    ]
    if best["best_value"] is not None:
        lines.append(f"- best {best['metric']}: {best['best_value']:.5f}")
    if best["pareto_front"]:
        lines.append(f"- Pareto front: {len(best['pareto_front'])} trial(s)")
    lines.append(f"- best parameters: `{json.dumps({k: _lookup(best, k) for k in best['tuned_keys']})}`")
    lines += ["", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(_cell(r[c]) for c in table.columns) + " |")
    return "\n".join(lines) + "\n"


def _lookup(best: dict[str, Any], key: str) -> Any:
    section, name = key.split(".", 1)
    return best[section][name]


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    if isinstance(v, float):
        return f"{v:.5g}"
    return str(v).replace("|", "\\|")


def history_figure(result: TuningResult):
    """Each trial's first objective (pruned trials at the value they were stopped with) and the
    best so far."""
    fig, ax = _figure()
    metric = result.plan.metric
    xs, ys, colours = [], [], []
    for t in result.study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            xs.append(t.number), ys.append(t.values[0]), colours.append("#4c72b0")
        elif t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            xs.append(t.number), ys.append(t.intermediate_values[max(t.intermediate_values)]), colours.append("#c44e52")
    if xs:
        ax.scatter(xs, ys, c=colours, s=22, zorder=3)
        complete = [(x, y) for x, y, c in zip(xs, ys, colours, strict=True) if c == "#4c72b0"]
        if complete:
            cx, cy = zip(*complete, strict=True)
            best = np.maximum.accumulate(cy) if metric.direction == "maximize" else np.minimum.accumulate(cy)
            ax.step(cx, best, where="post", color="#dd8452", label="best so far")
    ax.scatter([], [], c="#4c72b0", s=22, label="complete")
    ax.scatter([], [], c="#c44e52", s=22, label="pruned (last reported)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"valid {metric.name}")
    ax.set_title(f"{result.plan.family.name}: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def param_importances(result: TuningResult) -> dict[str, float]:
    """fANOVA importances of the parameters for the first objective ({} when fewer than two
    complete trials or no parameter varies)."""
    complete = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                result.study, target=lambda t: t.values[0], evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
    except (RuntimeError, ValueError) as exc:
        logger.info("parameter importance not computed: %s", exc)
        return {}


def importance_figure(result: TuningResult):
    """A bar per parameter: its fANOVA importance (or a note saying why there is none yet)."""
    imp = param_importances(result)
    fig, ax = _figure(7.0, 0.5 * max(len(imp), 3) + 1.5)
    if imp:
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="#55a868")
        ax.set_xlabel(f"importance for valid {result.plan.metric.name} (fANOVA)")
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "parameter importance needs at least two complete trials\nwith varying parameters",
                ha="center", va="center")  # fmt: skip
    ax.set_title(f"{result.plan.family.name}: parameter importance")
    fig.tight_layout()
    return fig


def parallel_figure(result: TuningResult):
    """Parallel coordinates: one line per complete trial across its parameters (each axis scaled
    to [0, 1]; log ranges on a log scale; categorical choices evenly spaced), coloured by the first
    objective."""
    import matplotlib.cm as cm
    import matplotlib.colors as mcolors

    fig, ax = _figure(max(6.0, 1.6 * (len(result.plan.space) + 1)), 4.5)
    complete = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    names = sorted({k for t in complete for k in t.params})
    metric = result.plan.metric.name
    if not complete or not names:
        ax.axis("off")
        ax.text(0.5, 0.5, "no complete trials yet", ha="center", va="center")
        fig.tight_layout()
        return fig
    axes = [*names, metric]
    columns: dict[str, np.ndarray] = {}
    labels: dict[str, tuple[str, str]] = {}
    for name in names:
        dist = next(t.distributions[name] for t in complete if name in t.distributions)
        raw = [t.params.get(name) for t in complete]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            choices = [json.dumps(c) if isinstance(c, list) else c for c in dist.choices]
            pos = {c: i for i, c in enumerate(choices)}
            vals = np.array([pos.get(v, np.nan) for v in raw], dtype=float) / max(len(choices) - 1, 1)
            labels[name] = (str(choices[0]), str(choices[-1]))
        else:
            arr = np.array(raw, dtype=float)
            lo, hi = float(dist.low), float(dist.high)
            if getattr(dist, "log", False):
                arr, lo, hi = np.log(arr), math.log(lo), math.log(hi)
            vals = (arr - lo) / (hi - lo if hi > lo else 1.0)
            labels[name] = (f"{dist.low:g}", f"{dist.high:g}")
        columns[name] = vals
    score = np.array([t.values[0] for t in complete], dtype=float)
    lo, hi = float(np.nanmin(score)), float(np.nanmax(score))
    columns[metric] = (score - lo) / (hi - lo if hi > lo else 1.0)
    labels[metric] = (f"{lo:.4g}", f"{hi:.4g}")
    norm = mcolors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
    cmap = cm.get_cmap("viridis") if hasattr(cm, "get_cmap") else __import__("matplotlib").colormaps["viridis"]
    order = np.argsort(score if result.plan.metric.direction == "maximize" else -score)  # best drawn last
    x = np.arange(len(axes))
    for r in order:
        ax.plot(x, [columns[a][r] for a in axes], color=cmap(norm(score[r])), alpha=0.8, lw=1.2)
    for i, a in enumerate(axes):
        ax.axvline(i, color="#444", lw=0.8)
        ax.text(i, -0.06, labels[a][0], ha="center", va="top", fontsize=7)
        ax.text(i, 1.04, labels[a][1], ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, axes, rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=f"valid {metric}")
    ax.set_title(f"{result.plan.family.name}: parallel coordinates", pad=16)
    fig.tight_layout()
    return fig


def pareto_figure(result: TuningResult):
    """The two objectives of every complete trial with the Pareto front highlighted (a note for a
    one-objective study)."""
    fig, ax = _figure(6.5, 4.5)
    names = result.plan.objective_names
    if len(names) < 2:
        ax.axis("off")
        ax.text(0.5, 0.5, "one objective: no Pareto front", ha="center", va="center")
        fig.tight_layout()
        return fig
    complete = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = {t.number for t in result.study.best_trials}
    for t in complete:
        on = t.number in front
        ax.scatter(t.values[1], t.values[0], c="#c44e52" if on else "#8c8c8c", s=30 if on else 16, zorder=3 if on else 2)
    ax.scatter([], [], c="#c44e52", label="Pareto front")
    ax.scatter([], [], c="#8c8c8c", label="other trials")
    ax.set_xlabel(names[1])
    ax.set_ylabel(f"valid {names[0]}")
    ax.set_title(f"{result.plan.family.name}: {names[0]} vs {names[1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
