"""`two_stage`: any retriever chained to any ranker trained on its candidates.

Which retriever feeds which ranker is declared in `conf/base/parameters_two_stage.yml`
(`two_stage.chains`); the pipeline reads that list when it is created, so the chains' nodes exist
before a run (Kedro validates `params:two_stage` against `TwoStageConfig` before any node runs).

- per retriever, in its namespace: `generate_candidates` reads `<retriever>.model` (a missing
  model is an error naming it and the command that trains it) and writes `<retriever>.candidates`
  (data/05_model_input/candidates/<retriever>/candidates.parquet) and `<retriever>.candidate_stats`;
- per chain, in the namespace `<retriever>__<ranker>`: `fit_ranker` (the ranker on the labelled
  training candidates, with its training parameters `params:<ranker>` and the item side it reads
  in training) -> `<chain>.ranker` (data/06_models/two_stage/<chain>/), and `evaluate_chain` ->
  `<chain>.two_stage_metrics` (data/08_reporting/two_stage/<chain>.json);
- `report_two_stage` -> data/08_reporting/two_stage/leaderboard.md.

`kedro run --pipelines two_stage` runs every chain (the trained retrievers must exist:
`kedro run --pipelines training --namespaces bpr`).
"""

import logging
import warnings
from pathlib import Path

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.training.pipeline import upstream
from recforge.pipelines.two_stage.nodes import generate_candidates, make_evaluate_chain, make_fit_ranker, report_two_stage
from recforge.training.two_stage import ChainConfig, TwoStageConfig

logger = logging.getLogger(__name__)

PARAMETERS = Path("conf/base/parameters_two_stage.yml")


def declared_chains(path: Path = PARAMETERS) -> tuple[ChainConfig, ...]:
    """The chains of `two_stage.chains` in the project's parameters (relative to the project root,
    where Kedro runs), validated; none when the file is absent."""
    import yaml

    if not path.is_file():
        logger.warning("two_stage: %s not found; the pipeline has no chains", path)
        return ()
    block = (yaml.safe_load(path.read_text()) or {}).get("two_stage", {})
    return TwoStageConfig.model_validate(block).chains


def create_pipeline(chains: tuple[ChainConfig, ...] | None = None, **kwargs) -> Pipeline:
    # chain datasets are namespaced names (`bpr.candidates`) on purpose; Kedro's warning about
    # dots in dataset names targets hand-written names
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        return _create(declared_chains() if chains is None else chains)


def _side(family: str) -> list[str]:
    """The datasets of `family`'s item side (vector tables, item content, feature tables), as
    its training node reads them (trained models to start from excluded)."""
    return [v for k, v in upstream(family).items() if not k.endswith("_model")]


def _create(chains: tuple[ChainConfig, ...]) -> Pipeline:
    retrievers = list(dict.fromkeys(c.retriever for c in chains))
    nodes = [
        Node(generate_candidates,
             inputs=[f"{r}.model", "train", "test", "user_map", "item_map", "params:two_stage", *_side(r)],
             outputs=[f"{r}.candidates", f"{r}.candidate_stats"], name="generate_candidates", namespace=r)
        for r in retrievers
    ]
    for c in chains:
        side = _side(c.ranker)
        nodes += [
            Node(make_fit_ranker(c.name),
                 inputs=[f"{c.retriever}.candidates", "train", "user_map", "item_map", "params:two_stage",
                         f"params:{c.ranker}", *side],
                 outputs=f"{c.name}.ranker", name="fit_ranker", namespace=c.name),
            Node(make_evaluate_chain(c.name),
                 inputs=[f"{c.retriever}.candidates", f"{c.retriever}.candidate_stats", f"{c.name}.ranker",
                         "test", "user_map", "item_map", "params:two_stage"],
                 outputs=f"{c.name}.two_stage_metrics", name="evaluate_chain", namespace=c.name),
        ]
    if chains:
        nodes.append(Node(report_two_stage, inputs={c.name: f"{c.name}.two_stage_metrics" for c in chains},
                          outputs="two_stage_leaderboard_md", name="report_two_stage"))
    return Pipeline(nodes)
