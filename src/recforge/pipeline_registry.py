"""Project pipelines: every folder under pipelines/ plus `__default__`, which chains them.

`__default__` tunes only `DEFAULT_TUNED` (cheap families with small trial budgets), so the
default run stays inside its time budget; `--pipelines tuning` tunes every tunable family.
`ctr` (click models on the impression log) runs on its own: `kedro run --pipelines ctr`; not every
source has an impression log (MovieLens, the session datasets), and a pipeline's shape never
depends on the env. `two_stage_tuning` (a study per retriever -> ranker chain) runs on its own
too, like the studies `--pipelines tuning` runs beyond `DEFAULT_TUNED`.
"""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from recforge.pipelines.tuning.pipeline import DEFAULT_TUNED

TUNING_PIPELINES = ("tuning", "tuned")
OWN_RUN = ("ctr", "two_stage_tuning")


def register_pipelines() -> dict[str, Pipeline]:
    # Kedro loads only the requested pipelines (all of them when `__default__` is requested)
    pipelines = find_pipelines()
    default = sum(
        (p for name, p in pipelines.items() if name not in TUNING_PIPELINES + OWN_RUN), Pipeline([])
    )
    for name in TUNING_PIPELINES:
        if name in pipelines:
            default += pipelines[name].only_nodes_with_namespaces(list(DEFAULT_TUNED))
    pipelines["__default__"] = default
    return pipelines
