"""The `two_stage_tuning` pipeline through Kedro: a namespace per declared chain that reads valid
and never test, its dvc stage, and a real run in a throw-away project (tiny shop, a trained bpr
retriever): the chain's best N and ranker parameters, trials and history written, the test split
never read, and a bad space failing before anything runs, naming the chain and the parameter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recforge.data.filters import filter_interactions
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.pipelines.two_stage.pipeline import declared_chains
from recforge.pipelines.two_stage_tuning.pipeline import REPORTS, create_pipeline
from recforge.training.recommender import Recommender
from recforge.training.two_stage import ChainConfig, TwoStageConfig

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "base"
CHAIN = {"retriever": "bpr", "ranker": "gmf", "n": 20}
TUNING = {
    "defaults": {"n_trials": 3, "sampler": "random", "seed": 1, "timeout": None,
                 "space": {"n": {"type": "categorical", "choices": [10, 20, 30]},
                           "model": {"dim": {"type": "categorical", "choices": [4, 8]}}}},
    "chains": {},
}


def test_a_namespace_per_declared_chain_reading_valid_never_test():
    pipeline = create_pipeline()
    chains = declared_chains()
    assert {n.namespace for n in pipeline.nodes} == {c.name for c in chains}
    assert "test" not in pipeline.inputs() and "valid" in pipeline.inputs()
    gmf = create_pipeline(chains=(ChainConfig(**CHAIN),))
    assert gmf.inputs() == {
        "bpr.model", "train", "valid", "user_map", "item_map", "params:two_stage", "params:two_stage_tuning",
        "params:gmf", "params:ingestion.source", "bpr__gmf.chain_tuning_storage",
    }  # fmt: skip
    assert gmf.outputs() == {f"bpr__gmf.{r}" for r in REPORTS}


def test_the_declared_studies_validate_and_the_dvc_stage_holds_the_outputs():
    from recforge.tuning.two_stage import TwoStageTuningConfig, plan_chain

    raw = yaml.safe_load((CONF / "parameters_two_stage.yml").read_text())
    tuning = TwoStageTuningConfig.model_validate(raw["two_stage_tuning"])
    chains = declared_chains()
    tuning.check_chains(chains)
    training = yaml.safe_load((CONF / "parameters_training.yml").read_text())
    for c in chains:
        plan = plan_chain(c, tuning.for_chain(c.name), training[c.ranker])
        assert plan.space.n_values() and plan.plan.metric.name == "ndcg@10"
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["two_stage_tuning"]
    assert stage["cmd"] == "scripts/kedro run --pipelines two_stage_tuning"
    assert "data/05_model_input/valid.parquet" in stage["deps"]
    assert "data/05_model_input/test.parquet" not in stage["deps"]
    assert {f"data/06_models/{c.retriever}" for c in chains} <= set(stage["deps"])
    for entry in yaml.safe_load((CONF / "catalog_two_stage_tuning.yml").read_text()).values():
        where = (entry.get("filepath") or entry["path"]).split("/{chain}/")[0]
        assert where in stage["outs"], where


def test_two_stage_tuning_is_registered_but_not_in_the_default_run():
    from kedro.framework.project import configure_project

    from recforge.pipeline_registry import register_pipelines

    configure_project("recforge")
    pipelines = register_pipelines()
    assert "two_stage_tuning" in pipelines
    assert not [n for n in pipelines["__default__"].nodes if n.name.endswith("tune_chain")]


# ------------------------------------------------------------------ a real run, tiny shop
@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project with conf/ and pyproject.toml, the splits of a tiny shop and a trained bpr."""
    dest = tmp_path_factory.mktemp("two_stage_tuning_project")
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "src").mkdir()  # Kedro wants the source folder; recforge itself is the installed package
    shutil.copytree(CONF, dest / "conf/base")
    local = dest / "conf/local"
    local.mkdir(parents=True)
    (local / "parameters_two_stage.yml").write_text(yaml.safe_dump(
        {"two_stage": {"chains": [CHAIN]}, "two_stage_tuning": TUNING}))
    data = dest / "data"
    shop = generate_shop(ShopConfig(preset="tiny", n_users=200, n_items=100, n_sessions=1500))
    cfg = SplitConfig(strategy="temporal", valid_fraction=0.15, test_fraction=0.15, seed=0,
                      min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, cfg), None, cfg)
    split_dir = data / "05_model_input"
    split_dir.mkdir(parents=True)
    for name in ("train", "valid", "test"):
        getattr(s, name).to_parquet(split_dir / f"{name}.parquet")
    s.user_map.to_frame().to_parquet(split_dir / "user_map.parquet")
    s.item_map.to_frame().to_parquet(split_dir / "item_map.parquet")
    from recforge.data.interactions import InteractionData

    retriever = Recommender("bpr", {"dim": 16}, {"epochs": 8, "batch_size": 512, "lr": 0.02})
    retriever.fit(InteractionData.from_frame(s.train, len(s.user_map), len(s.item_map)))
    retriever.save(data / "06_models/bpr")
    return dest


def _run(project: Path, namespaces: list[str] | None = None) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["two_stage_tuning"], namespaces=namespaces)


def test_the_pipeline_tunes_a_chain_on_valid_without_reading_test(project):
    test_split = project / "data/05_model_input/test.parquet"
    kept = test_split.read_bytes()
    test_split.write_bytes(b"poisoned: two-stage tuning must not read the test split")
    try:
        _run(project, ["bpr__gmf"])
    finally:
        test_split.write_bytes(kept)
    reports = project / "data/08_reporting/two_stage_tuning/bpr__gmf"
    best = yaml.safe_load((reports / "best_params.yml").read_text())
    assert best["chain"] == "bpr__gmf" and best["study_name"] == "bpr__gmf.synthetic" and best["split"] == "valid"
    assert best["n"] in (10, 20, 30) and best["model"]["dim"] in (4, 8) and 0.0 <= best["best_value"] <= 1.0
    assert best["n_trials"] == 3 and best["tuned_keys"] == ["model.dim"]
    # the best chain pastes into two_stage.chains as it is
    pasted = TwoStageConfig.model_validate({"chains": [best["two_stage_chain"]]}).chains[0]
    assert (pasted.name, pasted.n, pasted.model["dim"]) == ("bpr__gmf", best["n"], best["model"]["dim"])
    trials = pd.read_parquet(reports / "trials.parquet")
    assert list(trials["number"]) == [0, 1, 2] and set(trials["state"]) == {"complete"}
    assert trials.loc[0, "n"] == CHAIN["n"]  # trial 0: the chain as declared
    assert {"n", "model.dim", "ndcg@10", "candidate_recall"} <= set(trials.columns)
    assert (reports / "trials.md").read_text().startswith("# Two-stage tuning: bpr__gmf")
    assert (reports / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (project / "data/06_models/two_stage_tuning/bpr__gmf/study.db").is_file()


def test_a_bad_space_fails_before_anything_is_fitted_naming_the_chain_and_parameter(project, tmp_path):
    local = project / "conf/local/parameters_two_stage.yml"
    kept = local.read_text()
    bad = {**TUNING, "chains": {"bpr__gmf": {"space": {"n": {"type": "int", "low": 0, "high": 20}}}}}
    local.write_text(yaml.safe_dump({"two_stage": {"chains": [CHAIN]}, "two_stage_tuning": bad}))
    try:
        with pytest.raises(Exception, match=r"'bpr__gmf', key 'space.n'.*positive integers"):
            _run(project, ["bpr__gmf"])
        bad["chains"] = {"bpr__gmf": {"space": {**TUNING["defaults"]["space"], "model": {"width": {
            "type": "int", "low": 4, "high": 8}}}}}
        local.write_text(yaml.safe_dump({"two_stage": {"chains": [CHAIN]}, "two_stage_tuning": bad}))
        with pytest.raises(Exception, match=r"'bpr__gmf', key 'model.width'.*no field"):
            _run(project, ["bpr__gmf"])
    finally:
        local.write_text(kept)
