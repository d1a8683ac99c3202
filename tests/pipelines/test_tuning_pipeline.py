"""The `tuning` and `tuned` pipelines through Kedro: shape, the default run, and a real run in a
throw-away copy of the project (tiny shop) — resume, reports, the test split never read, the
tuned model evaluated, and bad input (corrupt study file, unreachable database, unknown
namespace) failing clearly with nothing half-written."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recforge.models.registry import FAMILIES
from recforge.pipelines.tuning.pipeline import DEFAULT_TUNED, TUNABLE
from recforge.tuning.study import plan_study

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "base"


def test_every_tunable_family_has_a_namespace_and_tuning_never_reads_test():
    from recforge.pipelines.tuned.pipeline import create_pipeline as tuned
    from recforge.pipelines.tuning.pipeline import create_pipeline as tuning

    assert set(TUNABLE) == set(FAMILIES) - {"random", "popularity"}
    pipeline = tuning()
    assert {n.namespace for n in pipeline.nodes} == set(TUNABLE)
    assert "test" not in pipeline.inputs()
    bpr = pipeline.only_nodes_with_namespaces(["bpr"])
    assert bpr.inputs() == {
        "train", "valid", "user_map", "item_map", "params:bpr.model", "params:bpr.training",
        "params:tuning.bpr", "params:ingestion.source", "bpr.tuning_storage",
    }  # fmt: skip
    assert "bpr.best_params" in bpr.outputs() and "bpr.tuning_history" in bpr.outputs()
    # upstream inputs as in training
    assert {"gmf.model", "mlp.model"} <= pipeline.only_nodes_with_namespaces(["neumf"]).inputs()
    assert "prod2vec.vectors" in pipeline.only_nodes_with_namespaces(["lstm"]).inputs()
    refit = tuned().only_nodes_with_namespaces(["bpr"])
    assert {"bpr.best_params", "test"} <= refit.inputs()
    assert refit.all_outputs() == {"bpr.tuned_model", "bpr.tuned_metrics"}


def test_the_default_run_tunes_only_the_cheap_families():
    from kedro.framework.project import configure_project, pipelines

    configure_project("recforge")
    tuned = {n.namespace for n in pipelines["__default__"].nodes if n.name.split(".")[-1] in ("tune_model", "fit_tuned_model")}
    assert tuned == set(DEFAULT_TUNED)
    # the leaderboard reads every tunable family's tuned metrics (absent ones load as None)
    board = next(n for n in pipelines["__default__"].nodes if n.name == "report_leaderboard")
    assert {f"{f}.tuned_metrics" for f in TUNABLE} <= set(board.inputs)


def test_parameters_tuning_has_a_block_per_tunable_family():
    raw = yaml.safe_load((CONF / "parameters_tuning.yml").read_text())
    assert set(raw) == {"tuning"}
    assert set(raw["tuning"]) == set(TUNABLE)


@pytest.mark.parametrize("family", TUNABLE)
def test_every_default_space_validates_against_the_family_configs(family):
    """Every trainable family ships a space that plans (keys exist, ranges valid, every bound and
    choice accepted by the config classes) with its default training parameters."""
    training = yaml.safe_load((CONF / "parameters_training.yml").read_text())[family]
    tuning = yaml.safe_load((CONF / "parameters_tuning.yml").read_text())["tuning"][family]
    plan = plan_study(family, training["model"], training["training"], tuning)
    assert plan.space.model or plan.space.training
    assert plan.tuning.n_trials >= 1


# ------------------------------------------------------------------ a real run, tiny shop
def _copy_project(dest: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    for rel in listed:
        if rel.startswith("data/") and not rel.endswith(".gitkeep"):
            continue
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    local = dest / "conf/local"
    local.mkdir(parents=True, exist_ok=True)
    ingestion = yaml.safe_load((CONF / "parameters_ingestion.yml").read_text())
    ingestion["ingestion"].update({"source": "synthetic", "synthetic": {"preset": "tiny", "seed": 7}})
    (local / "parameters_ingestion.yml").write_text(yaml.safe_dump(ingestion))
    evaluation = yaml.safe_load((CONF / "parameters_evaluation.yml").read_text())
    evaluation["evaluation"]["n_negatives"] = 10  # the tiny shop's users have few unseen items
    (local / "parameters_evaluation.yml").write_text(yaml.safe_dump(evaluation))
    tuning = yaml.safe_load((CONF / "parameters_tuning.yml").read_text())
    tuning["tuning"]["bpr"].update(n_trials=3, timeout=None)
    (local / "parameters_tuning.yml").write_text(yaml.safe_dump(tuning))
    return dest


def _run(project: Path, pipelines: list[str], namespaces: list[str] | None = None) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=pipelines, namespaces=namespaces)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = _copy_project(tmp_path_factory.mktemp("tuning_project"))
    _run(project, ["ingestion", "validation", "splitting"])
    return project


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_tuning_runs_resumes_and_reports_without_reading_test(project):
    data = project / "data"
    test_split = data / "05_model_input/test.parquet"
    kept = test_split.read_bytes()
    test_split.write_bytes(b"poisoned: tuning must not read the test split")
    try:
        _run(project, ["tuning"], ["bpr"])
        _run(project, ["tuning"], ["bpr"])  # a second run resumes the same study
    finally:
        test_split.write_bytes(kept)
    best = yaml.safe_load((data / "06_models/tuning/bpr/best_params.yml").read_text())
    assert best["family"] == "bpr" and best["study_name"] == "bpr.synthetic" and best["metric"] == "ndcg@10"
    assert best["n_trials"] == 6 and best["run_trials"] == 3
    assert best["tuned_keys"] == ["model.dim", "model.l2", "training.lr"]
    assert best["training"]["early_stopping_metric"] == "ndcg@10"
    assert 0.0 < best["best_value"] <= 1.0
    reports = data / "08_reporting/tuning/bpr"
    trials = pd.read_parquet(reports / "trials.parquet")
    assert list(trials["number"]) == list(range(6))
    assert {"state", "ndcg@10", "duration_s", "model.dim", "model.l2", "training.lr"} <= set(trials.columns)
    assert trials["this_run"].sum() == 3
    md = (reports / "trials.md").read_text()
    assert md.startswith("# Tuning: bpr") and "| number | state |" in md
    for png in ("history", "importance", "parallel", "pareto"):
        assert (reports / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

    # the documented command trains and evaluates bpr with the best parameters
    _run(project, ["tuned"], ["bpr"])
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["family"] == "bpr" and "ndcg@10" in metrics["full"]
    assert metrics["tuning"]["n_trials"] == 6 and metrics["tuning"]["tuning_seconds"] > 0
    config = json.loads((data / "06_models/tuning/bpr/model/config.json").read_text())
    assert config["config"]["dim"] == best["model"]["dim"] and config["train_config"]["lr"] == best["training"]["lr"]


@pytest.mark.slow
def test_a_corrupt_study_file_stops_the_run_and_is_left_untouched(project, tmp_path):
    from recforge.tuning.storage import TuningStorageError

    study = project / "data/06_models/tuning/mf/study.db"
    study.parent.mkdir(parents=True, exist_ok=True)
    study.write_bytes(b"this is not an SQLite database" * 10)
    before = _snapshot(project / "data")
    with pytest.raises(TuningStorageError, match=r"mf/study\.db is not an SQLite database"):
        _run(project, ["tuning"], ["mf"])
    assert _snapshot(project / "data") == before
    study.unlink()


@pytest.mark.slow
def test_an_unreachable_database_from_credentials_names_host_and_database_not_the_password(project):
    from recforge.tuning.storage import TuningStorageError

    credentials = project / "conf/local/credentials.yml"
    url = "postgresql+psycopg2://tuner:s3cret-pw@127.0.0.1:9/studies"  # port 9: nothing listens
    credentials.write_text(yaml.safe_dump({"tuning_storage": {"url": url}}))
    before = _snapshot(project / "data")
    try:
        with pytest.raises(TuningStorageError) as info:
            _run(project, ["tuning"], ["bpr"])
    finally:
        credentials.unlink()
    message = str(info.value)
    assert "127.0.0.1" in message and "studies" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(info.value.__cause__)
    assert _snapshot(project / "data") == before


def test_an_unknown_family_in_namespaces_is_named():
    from kedro.framework.project import configure_project, pipelines

    configure_project("recforge")
    for bad in ("nope", "random"):  # random has nothing to tune
        with pytest.raises(ValueError, match=rf"namespaces.*{bad}"):
            pipelines["tuning"].only_nodes_with_namespaces([bad])


def test_n_trials_zero_is_rejected_before_any_node_runs():
    from kedro.validation.exceptions import ParameterValidationError
    from kedro.validation.parameter_validator import ParameterValidator

    from recforge.pipelines.tuning.pipeline import create_pipeline

    pipeline = create_pipeline().only_nodes_with_namespaces(["bpr"])
    raw = yaml.safe_load((CONF / "parameters_tuning.yml").read_text())
    raw["tuning"]["bpr"]["n_trials"] = 0
    raw["bpr"] = yaml.safe_load((CONF / "parameters_training.yml").read_text())["bpr"]
    raw["ingestion"] = {"source": "synthetic"}
    with pytest.raises(ParameterValidationError, match="n_trials must be at least 1"):
        ParameterValidator({"tuning": pipeline}).validate_raw_params(raw)


def test_a_tuned_content_family_is_evaluated_on_its_cold_items_too():
    from recforge.pipelines.evaluation.nodes import item_side_inputs
    from recforge.pipelines.tuned.pipeline import create_pipeline as tuned_pipeline

    node = next(n for n in tuned_pipeline().nodes if n.name == "vbpr.evaluate_tuned_model")
    assert set(item_side_inputs("vbpr").values()) == {"image.vectors", "text.vectors", "audio.vectors", "content2vec.vectors"}
    assert set(item_side_inputs("vbpr").values()) <= set(node.inputs)
