"""Two-stage tuning nodes: a chain's trained retriever, the train and valid splits (never test)
in; the chain's best N and ranker parameters and its trials out. The work is in
`recforge.tuning.two_stage`."""

# No `from __future__ import annotations`: Kedro validates the typed parameters before a run.
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from recforge.data.interactions import InteractionData
from recforge.pipelines.training.pipeline import ITEM_VECTORS
from recforge.training.inputs import item_side
from recforge.training.recommender import Recommender
from recforge.training.two_stage import TwoStageConfig
from recforge.tuning import two_stage as tuning
from recforge.tuning.storage import TuningStorage
from recforge.tuning.study import study_name
from recforge.tuning.two_stage import TwoStageTuningConfig

logger = logging.getLogger(__name__)


def make_tune_chain(chain: str, n_ranker_side: int = 0) -> Callable[..., tuple]:
    """The `tune_chain` node of one chain.

    Inputs: the chain's trained retriever, train, valid, user_map, item_map, `params:two_stage`,
    `params:two_stage_tuning`, the ranker's `params:<ranker>` (the base every trial starts from,
    with the chain's overrides), the data source's name (the study is `<chain>.<source>`), the
    study storage, then the ranker's item side and the retriever's (`n_ranker_side` datasets
    first), as in the two_stage pipeline.
    Outputs: best parameters, trials table, trials Markdown, optimisation history figure."""

    def tune_chain(
        model: Recommender,
        train: pd.DataFrame,
        valid: pd.DataFrame,
        user_map: pd.DataFrame,
        item_map: pd.DataFrame,
        two_stage_config: TwoStageConfig,
        two_stage_tuning: TwoStageTuningConfig,
        ranker_params: dict[str, Any],
        source: str,
        storage: TuningStorage,
        *upstream: Any,
    ) -> tuple[dict[str, Any], pd.DataFrame, str, Any]:
        """Run (or resume) the chain's study on the validation period and report it."""
        c = two_stage_config.chain(chain, "two_stage_tuning")
        two_stage_tuning.check_chains(two_stage_config.chains)
        config = two_stage_tuning.for_chain(chain)
        plan = tuning.plan_chain(c, config, ranker_params, len(item_map))  # before anything is fitted
        fam = plan.plan.family
        side = list(upstream)
        vectors, _ = item_side(fam, fam.config.model_validate(plan.plan.base_model), side[:n_ranker_side], item_map,
                               ITEM_VECTORS.get(c.ranker, ()))  # fmt: skip
        retriever_vectors, _ = item_side(model.family, model.config, side[n_ranker_side:], item_map,
                                         ITEM_VECTORS.get(model.name, ()))  # fmt: skip
        nu, ni = len(user_map), len(item_map)
        result = tuning.tune_chain(
            plan, model, InteractionData.from_frame(train, nu, ni, name="train"),
            InteractionData.from_frame(valid, nu, ni, name="valid"), storage.choose(config.storage),
            two_stage_config, name=study_name(chain, source, config), item_vectors=vectors,
            retriever_vectors=retriever_vectors,
        )  # fmt: skip
        table = tuning.chain_trials_table(result)
        return (result.best_params(), table, tuning.chain_trials_markdown(result, table),
                tuning.chain_history_figure(result))

    tune_chain.__qualname__ = "tune_chain"
    return tune_chain


__all__: Sequence[str] = ("make_tune_chain",)
