"""The project as a user drives it: `kedro run` through a KedroSession, `dvc repro`, `kedro viz
build` — each in a throw-away copy of the repo with the `tiny` synthetic shop, never touching the
repo's own data/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recforge.models.registry import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {"ingestion": {"source": "synthetic", "synthetic": {"preset": "tiny", "seed": 7}}}


def _copy_project(dest: Path) -> Path:
    # the working tree as the next commit would hold it: tracked files and new, not ignored ones
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    for rel in files.stdout.splitlines():
        if rel.startswith("data/") and not rel.endswith(".gitkeep"):
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # conf/local overrides base: the tiny shop, like a user's local settings
    (dest / "conf/local").mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "conf/base/parameters_ingestion.yml").read_text())
    base["ingestion"].update(TINY["ingestion"])
    base["ingestion"]["synthetic"] = TINY["ingestion"]["synthetic"]
    (dest / "conf/local/parameters_ingestion.yml").write_text(yaml.safe_dump(base))
    return dest


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "KEDRO_DISABLE_TELEMETRY": "true"}


def _env_without_kedro() -> dict[str, str]:
    """A shell that never activated a venv: no VIRTUAL_ENV, and no kedro anywhere on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    dirs = [d for d in env["PATH"].split(os.pathsep) if d and shutil.which("kedro", path=d) is None]
    env["PATH"] = os.pathsep.join(dirs)
    env["KEDRO_DISABLE_TELEMETRY"] = "true"
    assert shutil.which("kedro", path=env["PATH"]) is None
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return _copy_project(tmp_path_factory.mktemp("project"))


@pytest.mark.slow
def test_ingestion_validation_splitting_run_through_kedro(project):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["ingestion", "validation", "splitting"])
    data = project / "data"
    interactions = pd.read_parquet(data / "03_primary/interactions.parquet")
    assert len(interactions) > 1000  # the tiny shop
    assert json.loads((data / "03_primary/validation_status.json").read_text())["passed"] is True
    assert (data / "08_reporting/validation_report.md").read_text().startswith("# Validation report")
    train = pd.read_parquet(data / "05_model_input/train.parquet")
    test = pd.read_parquet(data / "05_model_input/test.parquet")
    assert train["timestamp"].max() <= test["timestamp"].min()  # base strategy: temporal
    manifest = json.loads((data / "03_primary/media/manifest.json").read_text())
    assert any(m["path"].endswith(".png") for m in manifest)
    assert any(m["path"].endswith(".wav") for m in manifest)


def test_dvc_stages_mirror_the_pipelines_and_the_registry():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    from kedro.framework.project import configure_project

    from recforge.pipeline_registry import register_pipelines
    from recforge.pipelines.training.pipeline import upstream_inputs
    from recforge.pipelines.tuning.pipeline import DEFAULT_TUNED, TUNABLE

    configure_project("recforge")
    pipelines = register_pipelines()

    def own_stages(pipeline: str) -> dict[str, dict]:
        """`<pipeline>-<family>` stages, and each family of a `<pipeline>-<group>` foreach stage
        (its `do` with the family for ${item})."""
        out = {}
        for name, stage in spec.items():
            if not name.startswith(f"{pipeline}-"):
                continue
            if "foreach" in stage:
                template = yaml.safe_dump(stage["do"])
                out |= {f: yaml.safe_load(template.replace("${item}", f)) for f in stage["foreach"]}
            else:
                out[name.split("-", 1)[1]] = stage
        return out

    own_stage, own_tuning = own_stages("training"), own_stages("tuning")
    assert sorted([*spec["training"]["foreach"], *own_stage]) == sorted(FAMILIES)
    assert sorted([*spec["tuning"]["foreach"], *own_tuning]) == sorted(TUNABLE)
    for name, stage in spec.items():
        cmd = stage["do"]["cmd"] if "do" in stage else stage["cmd"]
        pipeline = name.split("-", 1)[0]
        # scripts/kedro, not kedro: `.venv/bin/dvc repro` runs without an activated venv
        assert cmd.startswith(f"scripts/kedro run --pipelines {pipeline}")
        assert pipeline in pipelines
    assert "tuned" in pipelines
    tuning_cmd = "scripts/kedro run --pipelines tuning,tuned --namespaces {}"
    assert spec["tuning"]["do"]["cmd"] == tuning_cmd.format("${item}")
    # a family reading upstream outputs has its own stage with their folders as deps
    catalog = {}
    for file in sorted((ROOT / "conf/base").glob("catalog*.yml")):
        catalog |= yaml.safe_load(file.read_text())
    folder = {"vectors": "data/04_feature/{}", "model": "data/06_models/{}"}

    def path(dataset: str) -> str:
        if "." not in dataset:
            where = catalog[dataset].get("filepath") or catalog[dataset]["path"]  # media: a folder
            # a folder that is a stage's out holds the file (data/04_feature/features/...)
            return where.rsplit("/", 1)[0] if where.startswith("data/04_feature/") else where
        namespace, kind = dataset.split(".")
        return folder[kind].format(namespace)

    for family in FAMILIES:
        wanted = {path(d) for d in upstream_inputs(family)}
        if wanted:
            assert family in own_stage, family
            assert wanted <= set(own_stage[family]["deps"]), family
            assert own_stage[family]["cmd"] == f"scripts/kedro run --pipelines training --namespaces {family}"
            if family in TUNABLE:
                assert family in own_tuning, family
        if family in own_tuning:
            # the foreach template for `family`, plus its upstream folders
            stage, template = own_tuning[family], yaml.safe_dump(spec["tuning"]["do"])
            expected = yaml.safe_load(template.replace("${item}", family))
            assert stage["cmd"] == tuning_cmd.format(family)
            assert set(stage["deps"]) == set(expected["deps"]) | wanted, family
            assert (stage["params"], stage["outs"]) == (expected["params"], expected["outs"]), family
    # every dataset of catalog_tuning.yml lies in its family's tuning outs
    tuning_outs = spec["tuning"]["do"]["outs"]
    for entry in yaml.safe_load((ROOT / "conf/base/catalog_tuning.yml").read_text()).values():
        where = (entry.get("filepath") or entry["path"]).replace("{family}", "${item}")
        assert any(where.startswith(f"{out}/") for out in tuning_outs), where
    # the leaderboard reads every family's model and the default tuned rows; `data/06_models` as
    # one dep would also hold data/06_models/tuning/ and pull every tuning stage into it
    evaluation = set(spec["evaluation"]["deps"])
    assert {f"data/06_models/{f}" for f in FAMILIES} <= evaluation
    assert {f"data/08_reporting/tuning/{f}" for f in DEFAULT_TUNED} <= evaluation
    assert not any(Path("data/06_models/tuning").is_relative_to(dep) for dep in evaluation)


def test_kedro_wrapper_exits_127_without_kedro(tmp_path):
    script = tmp_path / "scripts/kedro"
    script.parent.mkdir()
    shutil.copy2(ROOT / "scripts/kedro", script)  # no .venv next to this copy
    out = subprocess.run([str(script), "run"], cwd=tmp_path, env=_env_without_kedro(), capture_output=True, text=True)
    assert out.returncode == 127
    assert "kedro not found" in out.stderr and "make install" in out.stderr


def test_kedro_wrapper_runs_the_projects_venv_from_any_cwd(tmp_path):
    script = ROOT / "scripts/kedro"
    assert os.access(script, os.X_OK)
    mode = subprocess.run(["git", "ls-files", "-s", "scripts/kedro"], cwd=ROOT, capture_output=True, text=True)
    assert mode.stdout == "" or mode.stdout.startswith("100755"), "git must keep scripts/kedro executable"
    project = tmp_path / "clone"
    (project / "scripts").mkdir(parents=True)
    shutil.copy2(script, project / "scripts/kedro")
    fake = project / ".venv/bin/kedro"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "venv kedro $*"\n')
    fake.chmod(0o755)
    out = subprocess.run([str(project / "scripts/kedro"), "run", "--pipelines", "ingestion"], cwd=tmp_path,
                         env=_env_without_kedro(), capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == "venv kedro run --pipelines ingestion\n"


@pytest.mark.slow
def test_dvc_repro_is_incremental(tmp_path):
    project = _copy_project(tmp_path / "dvcproj")
    # a fresh clone after `make install`, driven from a shell that never activated the venv: every
    # stage's cmd must find kedro through scripts/kedro
    (project / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = _env_without_kedro()

    def dvc(*args: str) -> str:
        out = subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    first = dvc("repro", "splitting")
    assert "Running stage 'ingestion'" in first and "Running stage 'splitting'" in first
    second = dvc("repro", "splitting")
    assert "Running stage" not in second  # nothing changed, nothing reruns
    params = project / "conf/base/parameters_splitting.yml"
    params.write_text(params.read_text().replace("seed: 42", "seed: 43"))
    third = dvc("repro", "splitting")
    assert "Running stage 'splitting'" in third
    assert "Running stage 'ingestion'" not in third and "Running stage 'validation'" not in third

    # README: `dvc exp run -S 'conf/base/parameters_tuning.yml:tuning.bpr.n_trials=50' tuning@bpr`,
    # here with 2 trials; the tiny shop's users have few unseen items for the sampled protocol
    evaluation = yaml.safe_load((ROOT / "conf/base/parameters_evaluation.yml").read_text())
    evaluation["evaluation"]["n_negatives"] = 10
    (project / "conf/local/parameters_evaluation.yml").write_text(yaml.safe_dump(evaluation))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], cwd=project, check=True, capture_output=True)
    exp = dvc("exp", "run", "-S", "conf/base/parameters_tuning.yml:tuning.bpr.n_trials=2", "tuning@bpr")
    assert "Running stage 'tuning@bpr'" in exp
    best = yaml.safe_load((project / "data/06_models/tuning/bpr/best_params.yml").read_text())
    assert best["n_trials"] == 2 and best["study_name"] == "bpr.synthetic"
    tuned = yaml.safe_load((project / "conf/base/parameters_tuning.yml").read_text())["tuning"]
    assert tuned["bpr"]["n_trials"] == 2 and tuned["mf"]["n_trials"] == 12  # -S set one key only
    shown = dvc("exp", "show", "--csv", "--no-pager")
    assert "tuning.bpr.n_trials" in shown.splitlines()[0]


@pytest.mark.slow
def test_kedro_viz_build_lists_the_pipelines_nodes(project):
    out = subprocess.run(
        [str(BIN / "kedro"), "viz", "build"], cwd=project, env=_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    graph = json.loads((project / "build/api/main").read_text())
    tasks = {n["name"] for n in graph["nodes"] if n["type"] == "task"}
    for node in ("ingest_source", "validate_tables", "check_validation", "filter_interactions",
                 "split_interactions", "fit_model", "evaluate_model", "report_leaderboard"):
        assert node in tasks
    pipelines = {p.name for p in (project / "build/api/pipelines").iterdir()}
    assert {"ingestion", "validation", "splitting", "training", "evaluation", "__default__"} <= pipelines


@pytest.mark.slow
def test_notebook_runs_on_the_catalog(project):
    """Runs after the pipeline test above (same project copy): the notebook loads what it wrote."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if not (project / "data/05_model_input/train.parquet").exists():
        pytest.skip("needs test_ingestion_validation_splitting_run_through_kedro first")
    nb = nbformat.read(project / "notebooks/explore_catalog.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(project / "notebooks")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "interactions" in outputs and "cold-start share" in outputs
