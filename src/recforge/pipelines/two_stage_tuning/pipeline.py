"""`two_stage_tuning`: one study per chain of `two_stage.chains`, in the chain's namespace.

Each study tunes N (the candidates per user) together with the ranker's `model` / `training`
parameters (`two_stage_tuning` in conf/base/parameters_two_stage.yml), scoring the reranked metric
on the validation users; the test split is not an input. Per chain `<retriever>__<ranker>`,
`tune_chain` reads `<retriever>.model` (trained by `kedro run --pipelines training --namespaces
<retriever>`), the splits, the parameters, the study storage `<chain>.chain_tuning_storage`
(credentials `tuning_storage`, else data/06_models/two_stage_tuning/<chain>/study.db) and the
ranker's and the retriever's item side, and writes data/08_reporting/two_stage_tuning/<chain>/:
best_params.yml (its `two_stage_chain` block pastes into `two_stage.chains`), trials.parquet,
trials.md and history.png.

`kedro run --pipelines two_stage_tuning [--namespaces bpr__gmf]`; not part of `__default__`.
"""

import warnings

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.training.pipeline import upstream
from recforge.pipelines.two_stage.pipeline import declared_chains
from recforge.pipelines.two_stage_tuning.nodes import make_tune_chain
from recforge.training.two_stage import ChainConfig

REPORTS = ("chain_best_params", "chain_tuning_trials", "chain_tuning_trials_md", "chain_tuning_history")


def create_pipeline(chains: tuple[ChainConfig, ...] | None = None, **kwargs) -> Pipeline:
    # chain datasets are namespaced names (`bpr__gmf.chain_best_params`), as in two_stage
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        return _create(declared_chains() if chains is None else chains)


def _side(family: str) -> list[str]:
    """`family`'s item side (vector tables, item content, feature tables) as its training node
    reads them, trained models to start from excluded."""
    return [v for k, v in upstream(family).items() if not k.endswith("_model")]


def _create(chains: tuple[ChainConfig, ...]) -> Pipeline:
    nodes = []
    for c in chains:
        ranker_side, retriever_side = _side(c.ranker), _side(c.retriever)
        nodes.append(Node(
            make_tune_chain(c.name, len(ranker_side)),
            inputs=[f"{c.retriever}.model", "train", "valid", "user_map", "item_map", "params:two_stage",
                    "params:two_stage_tuning", f"params:{c.ranker}", "params:ingestion.source",
                    f"{c.name}.chain_tuning_storage", *ranker_side, *retriever_side],
            outputs=[f"{c.name}.{r}" for r in REPORTS], name="tune_chain", namespace=c.name,
        ))  # fmt: skip
    return Pipeline(nodes)
