"""`pretraining`: one template per encoder, instantiated in the encoder's namespace.

Every namespace writes `{name}.vectors` (04_feature: `item_id` + v0..v{D-1}) and
`{name}.encoder_config` (the config and training report), then reads its own table back for the
shared diagnostics: `{name}.neighbours`, `{name}.purity`, `{name}.projection` (08_reporting).
`kedro run --pipelines pretraining` runs every encoder; `--namespaces prod2vec` one of them.

A new encoder is one more `ENCODERS` entry: its node function (in `nodes.py`), the shared
datasets and namespaced parameters it reads, and its outputs — the first two always `vectors`
and `encoder_config`. The content encoders plug in the same way, e.g.
`"image": EncoderNode(encode_images, ("items", "media", "params:encoder", "params:training"))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.pretraining.nodes import (
    fit_meta_prod2vec,
    fit_prod2vec,
    fit_user2vec,
    list_neighbours,
    measure_purity,
    plot_projection,
)

# Datasets every namespace reads as they are (not prefixed with the namespace).
SHARED_INPUTS = frozenset({"train", "user_map", "item_map", "items", "media"})
DIAGNOSTICS = "params:vector_diagnostics"


@dataclass(frozen=True)
class EncoderNode:
    """How one encoder enters the pipeline: function, inputs (shared datasets, then `params:`
    keys inside the namespace) and outputs inside the namespace."""

    func: Callable[..., object]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ("vectors", "encoder_config")


ENCODERS: dict[str, EncoderNode] = {
    "prod2vec": EncoderNode(fit_prod2vec, ("train", "user_map", "item_map", "params:encoder", "params:training")),
    "meta_prod2vec": EncoderNode(
        fit_meta_prod2vec, ("train", "user_map", "item_map", "items", "params:encoder", "params:training")
    ),
    "user2vec": EncoderNode(
        fit_user2vec, ("train", "user_map", "item_map", "params:encoder", "params:training"),
        ("vectors", "user_vectors", "encoder_config"),
    ),
}


def create_encoder_pipeline(name: str) -> Pipeline:
    """Encoder `name`'s node and the diagnostics of its table, inside the `name` namespace."""
    encoder = ENCODERS[name]
    diagnostics_inputs = ["vectors", "items", DIAGNOSTICS]
    template = Pipeline(
        [
            Node(encoder.func, inputs=list(encoder.inputs), outputs=list(encoder.outputs),
                 name=encoder.func.__name__),
            Node(list_neighbours, inputs=diagnostics_inputs, outputs="neighbours", name="list_neighbours"),
            Node(measure_purity, inputs=diagnostics_inputs, outputs="purity", name="measure_purity"),
            Node(plot_projection, inputs=diagnostics_inputs, outputs="projection", name="plot_projection"),
        ]
    )
    shared = (set(encoder.inputs) | {"items"}) & SHARED_INPUTS
    return Pipeline(template, namespace=name, inputs=shared, parameters={DIAGNOSTICS})


def create_pipeline(**kwargs) -> Pipeline:
    """Every encoder's namespace."""
    return sum((create_encoder_pipeline(name) for name in ENCODERS), Pipeline([]))
