"""`pretraining`: one template per encoder, instantiated in the encoder's namespace.

Every namespace writes `{name}.vectors` (04_feature: `item_id` + v0..v{D-1}, the raw ids of
`items` / `item_map`) and `{name}.encoder_config` (the config and training report), then reads
its own table back for the shared diagnostics: `{name}.neighbours`, `{name}.purity`,
`{name}.projection` (08_reporting). `kedro run --pipelines pretraining` runs every encoder;
`--namespaces prod2vec` one of them.

Behaviour encoders (`prod2vec`, `meta_prod2vec`, `user2vec`) learn from the TRAIN split's
sequences. Content encoders learn from the catalogue, never from interactions: `image` (a small
ResNet on the photos in `media`), `text` (word2vec + Kim's CNN on title and description) and
`audio` (log-mel + a 1-D CNN on the sounds in `media`), each pretrained on the category proxy
task (Content2Vec). They vectorise every item of `items` with usable content, including items
that are not in `item_map` (cold-start items: `align_item_vectors` ignores them, a model
may use them later).

Sources without a modality (MovieLens, YooChoose, Diginetica, RetailRocket: no images or sounds;
YooChoose and RetailRocket: no text either) keep the pipeline's shape, since a Kedro env changes
parameters, never a pipeline: the content node sees that no item has that content (or that there
are fewer than two proxy labels), logs a warning saying so, and writes an empty vector table and
an `encoder_config` whose `skipped` names the reason; the diagnostics of an empty table say "no
vectors". So `kedro run --env movielens100k` runs through, and a model asking for `image`
vectors there fails in `align_item_vectors` ("the vector table is empty"). Content that exists but
is unreadable (a corrupt PNG, a missing WAV) is an error naming the file, or, with
`on_bad_media: skip`, listed under `report.skipped` of `encoder_config`. Behaviour encoders need
no content; only meta-prod2vec's metadata columns differ per source, so those envs set them in
`conf/<env>/parameters_pretraining.yml` (they have no `brand`).

A new encoder is one more `ENCODERS` entry: its node function (in `nodes.py`), the shared
datasets and namespaced parameters it reads, and its outputs — the first two always `vectors`
and `encoder_config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.pretraining.nodes import (
    encode_audio,
    encode_images,
    encode_texts,
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
    "image": EncoderNode(encode_images, ("items", "media", "params:encoder", "params:training")),
    "text": EncoderNode(encode_texts, ("items", "params:encoder", "params:training")),
    "audio": EncoderNode(encode_audio, ("items", "media", "params:encoder", "params:training")),
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
