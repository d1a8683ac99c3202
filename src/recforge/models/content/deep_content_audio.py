"""`deep_content_audio`: deep content-based music recommendation (van den Oord, Dieleman &
Schrauwen 2013, "Deep content-based music recommendation").

A convolutional network over an item's log-mel spectrogram is trained to regress the item's
latent factors y_i of a collaborative-filtering model; the paper's best objective is the mean
squared error on the factors of weighted matrix factorisation (WMF, Hu et al. 2008):

    ŷ_i = CNN(log-mel(i))                            (K,)
    L   = 1/(|B| K σ²) Σ_{i ∈ B} ‖ŷ_i − y_i‖²         over batches of items B
    x̂(u, i) = x_u · ŷ_i

where x_u are the same CF model's user factors and σ the overall std of the y_i (the network
outputs ŷ/σ: the CF model's regularisation sets the factors' size, often ~0.05, and a unit-scale
target trains several times better at the same learning rate; the minimiser is the same). Every item is scored from its predicted factors,
warm or cold alike, so items seen in training and new items rank on one scale — the point of
the paper: a new song is recommendable from its audio alone.

- The network and front end are the audio encoder's (`encoders.audio`: `AudioCNN` — 1-D
  convolutions over time with the mel bands as channels, global mean/max/L2 temporal pooling, a
  hidden layer — and `prepare_waveform` / `log_mel` with `AudioEncoderConfig`'s defaults:
  8 kHz, 1 s clips, 40 mel bands, hop 128, i.e. (40, 63) spectrograms). Its proxy-task head
  becomes the factor regression layer (K outputs).
- The spectrograms come from `item_content(items, media, item_map)` (`Family.content_inputs`:
  the items table and the media root, whose `audio_path` files are decoded once into an
  (n_items, n_mels, frames) float buffer). An item without a readable sound gets a NaN row;
  `on_bad_media: raise` (the default) then stops `build` naming those items, `skip` gives them
  the mean CF item factor as their prediction (counted and logged). A source without any sound
  (no `audio_path` values: MovieLens) gives no content at all: the family then IS its CF model,
  x_u · y_i, and cannot score cold items (as vbpr without content is BPR-MF).
- The targets come from a trained model (`Family.warm_start_from = ("als", "bpr")`; the
  `training` pipeline orders this family after both): with `pretrain: true` the `factors_from`
  model's user and item embeddings are x_u and y_i (for bpr, the item bias joins y_i as one more
  factor and x_u gets a constant 1, so x_u · y_i is BPR's score). With `pretrain: false` the
  family fits its own WMF factors before the loop (`Family.pretrain`: `wmf_iterations` of ALS's
  closed-form half-steps with `factors` factors), the paper's setting, self-contained.
- Cold users are folded in (`score_cold_users`): one weighted least-squares solve of WMF's user
  step against the predicted item factors, x_u = (ŶᵀŶ + α Ŷᵀ H_u Ŷ + λI)⁻¹ (1 + α) Ŷᵀ h_u.

The predicted factors of the catalogue are computed once per set of weights and cached while
the network is in eval mode (scoring a user batch is then one matrix product).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.encoders.audio import AudioCNN, AudioEncoderConfig, log_mel, prepare_waveform
from recforge.encoders.media_io import MediaSource, OnBadMedia, decode_audio, load_media
from recforge.models.cf import als
from recforge.models.base import Batch, ColdStartUnsupported, Family, ModelConfig, RecommenderNetwork
from recforge.models.cf.bpr import BPRMF
from recforge.training.losses import mse
from recforge.training.samplers import shuffled_batches

logger = logging.getLogger(__name__)

# The log-mel front end: the audio encoder's defaults, so the spectrograms are those it sees.
FRONT_END = AudioEncoderConfig()
_CHUNK = 1024  # items per CNN pass when predicting the catalogue's factors


class DeepContentAudioConfig(ModelConfig):
    factors_from: Literal["als", "bpr"] = Field("als", description="the trained CF model whose factors are regressed")
    pretrain: bool = Field(False, description="regress the trained factors_from model's factors; else fit WMF here")
    factors: int = Field(32, gt=0, description="K: the CF model's factors (checked against it), or WMF's")
    wmf_iterations: int = Field(10, ge=1, description="ALS iterations of the WMF fitted when pretrain is false")
    wmf_regularization: float = Field(0.1, gt=0)
    wmf_alpha: float = Field(1.0, ge=0, description="WMF confidence 1 + α r_ui; also the cold-user fold-in's")
    channels: tuple[int, ...] = Field((64, 64, 128), min_length=1, description="filters per conv layer")
    kernel_size: int = Field(4, ge=1, description="filter length in frames (the paper uses 4)")
    pool: int = Field(2, ge=1, description="max-pooling in time after every conv layer but the last")
    hidden: int = Field(128, gt=0, description="the fully connected layer before the factor layer")
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    fold_in_l2: float = Field(0.1, gt=0, description="λ of the cold-user fold-in")
    on_bad_media: OnBadMedia = Field("raise", description="items without a readable sound: error, or the mean factor")


# ----------------------------------------------------------------------------- content
def item_content(
    items: pd.DataFrame,
    media: Mapping[str, MediaSource],
    item_map: pd.DataFrame,
    front_end: AudioEncoderConfig = FRONT_END,
) -> torch.Tensor | None:
    """(n_items, n_mels, frames) float32 log-mel spectrograms in item_idx order, decoded once from
    `items.audio_path` in the media root; NaN rows for items without a readable sound (missing
    from `items`, no path, file absent or undecodable: counted and logged with the first reasons).
    None when no item of the map has an `audio_path` at all (the source has no sound)."""
    ids = item_map.sort_values("item_idx")["item_id"].astype("string")
    table = items.drop_duplicates("item_id").astype({"item_id": "string"}).set_index("item_id")
    table = table.reindex(ids.to_numpy())
    if "audio_path" not in table.columns or table["audio_path"].isna().all():
        logger.warning("deep_content_audio: no item has an audio_path; training on the CF factors alone")
        return None
    table = table.reset_index()

    def decode(data: bytes) -> np.ndarray:
        samples, rate = decode_audio(data)
        return prepare_waveform(samples, rate, front_end)

    waves, kept, skipped = load_media(table, media, "audio_path", decode, on_bad_media="skip")
    mels = log_mel(np.stack(waves), front_end) if waves else None  # (N, M, T)
    frames = 1 + front_end.n_samples // front_end.hop_length
    out = np.full((len(table), front_end.n_mels, frames), np.nan, dtype=np.float32)
    if mels is not None:
        out[kept] = mels
    if skipped:
        logger.warning("deep_content_audio: %d of %d items have no readable sound (first: %s)",
                       len(skipped), len(table), skipped[:3])
    return torch.from_numpy(out)


def _valid_frames(frames: int, config: DeepContentAudioConfig) -> int:
    """Frames left after the valid convolutions and poolings, as `AudioEncoderConfig` checks."""
    t = frames
    for i in range(len(config.channels)):
        t -= config.kernel_size - 1
        if i < len(config.channels) - 1:
            t //= config.pool
    return t


# ----------------------------------------------------------------------------- network
class DeepContentAudio(RecommenderNetwork):
    """x̂(u, i) = x_u · ŷ_i with ŷ_i = CNN(spectrogram_i), or the CF model x_u · y_i without sound."""

    def __init__(
        self, n_users: int, n_items: int, spectrograms: torch.Tensor, dim: int, config: DeepContentAudioConfig
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.on_bad_media = config.on_bad_media
        self.fold_in_alpha, self.fold_in_l2 = config.wmf_alpha, config.fold_in_l2
        has_audio = ~torch.isnan(spectrograms).flatten(1).any(1) if spectrograms.numel() else (
            torch.zeros(n_items, dtype=torch.bool))
        self.register_buffer("spectrograms", torch.nan_to_num(spectrograms.float()))  # (I, M, T)
        self.register_buffer("has_audio", has_audio)  # (I,)
        self.register_buffer("user_factors", torch.zeros(n_users, dim))  # x_u (U, K)
        self.register_buffer("item_factors", torch.zeros(n_items, dim))  # y_i, the targets (I, K)
        # the CNN regresses y_i / σ (σ: the factors' overall std): a unit-scale output whatever
        # the CF model's regularisation made of the factors' size; the MSE is the same up to σ²
        self.register_buffer("target_scale", torch.ones(()))
        self.cnn: AudioCNN | None = None
        if spectrograms.shape[1] > 0:
            c = config
            self.cnn = AudioCNN(spectrograms.shape[1], c.channels, c.kernel_size, c.pool, c.hidden, c.dropout, dim)
            heard = self.spectrograms[has_audio]  # (N, M, T)
            if len(heard) > 1:
                with torch.no_grad():  # per-band standardisation, as the audio encoder fits it
                    self.cnn.mel_mean.copy_(heard.mean(dim=(0, 2)))
                    self.cnn.mel_std.copy_(heard.std(dim=(0, 2)).clamp_min(1e-3))
        # set when the factors were copied from a trained model; else `fit_wmf` fits them
        self.factors_ready = False
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def predict_factors(self, spectrograms: torch.Tensor, has_audio: torch.Tensor) -> torch.Tensor:
        """(C, M, T) spectrograms (zeros where `has_audio` (C,) is false) -> (C, K) ŷ; items
        without sound get the mean item factor."""
        mean = self.item_factors.mean(0)  # (K,)
        out = mean.expand(len(spectrograms), -1).clone()  # (C, K)
        rows = torch.nonzero(has_audio).squeeze(1)
        for lo in range(0, len(rows), _CHUNK):
            r = rows[lo : lo + _CHUNK]
            out[r] = self.cnn(spectrograms[r]).to(out.dtype) * self.target_scale  # (c, K)
        return out

    def item_predictions(self) -> torch.Tensor:
        """(I, K) the catalogue's factors: ŷ from the audio, or y itself without content. Cached
        in eval mode until a weight changes (the key holds every tensor's version counter)."""
        if self.cnn is None:
            return self.item_factors
        if self.training:
            return self.predict_factors(self.spectrograms, self.has_audio)
        key = tuple((id(t), t._version, t.device) for t in (*self.parameters(), *self.buffers()))
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.predict_factors(self.spectrograms, self.has_audio))
        return self._cache[1]

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.user_factors[user] * self.item_predictions()[item]).sum(-1)  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.user_factors[user] @ self.item_predictions().T  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_predictions()

    def score_cold_items(self, user: torch.Tensor, content: torch.Tensor | None) -> torch.Tensor:
        """(B,), (C, M, T) spectrograms of new items from `item_content` -> (B, C) x_u · ŷ_c."""
        if self.cnn is None:
            raise ColdStartUnsupported("deep_content_audio was trained without sound: it has no content to "
                                       "score new items from")
        if content is None or content.dim() != 3 or tuple(content.shape[1:]) != tuple(self.spectrograms.shape[1:]):
            got = None if content is None else tuple(content.shape)
            raise ValueError(
                f"deep_content_audio: cold items need (C, {self.spectrograms.shape[1]}, "
                f"{self.spectrograms.shape[2]}) log-mel spectrograms as the model was trained on, got {got}"
            )
        content = content.to(self.spectrograms)
        heard = check_sound(content, self.on_bad_media, "cold items")
        with torch.no_grad():
            predicted = self.predict_factors(torch.nan_to_num(content), heard)  # (C, K)
        return self.user_factors[user] @ predicted.T

    def set_factors(self, user: torch.Tensor, item: torch.Tensor) -> None:
        """Install the CF model's x_u (U, K) and y_i (I, K), the regression targets."""
        with torch.no_grad():
            self.user_factors.copy_(user)
            self.item_factors.copy_(item)
            self.target_scale.fill_(float(item.std().clamp_min(1e-6)))
        self.factors_ready = True

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """(B, I) fold-in histories -> (B, I): WMF's user step against the predicted item factors."""
        y = self.item_predictions()  # (I, K)
        h = history.to(y.dtype)  # (B, I)
        confidence = self.fold_in_alpha * h.abs()  # (B, I) c_ui − 1
        k = y.shape[1]
        a = y.T @ y + self.fold_in_l2 * torch.eye(k, dtype=y.dtype, device=y.device)  # (K, K)
        a = a + torch.einsum("bi,ik,il->bkl", confidence, y, y)  # (B, K, K)
        b = ((1 + confidence) * (h > 0)) @ y  # (B, K)
        x = torch.linalg.solve(a, b)  # (B, K)
        return x @ y.T


def check_sound(spectrograms: torch.Tensor, on_bad_media: str, what: str) -> torch.Tensor:
    """(C,) bool: which rows have a sound; NaN rows are an error naming them unless `skip`."""
    heard = ~torch.isnan(spectrograms).flatten(1).any(1)
    missing = torch.nonzero(~heard).squeeze(1)
    if len(missing):
        shown = ", ".join(map(str, missing[:5].tolist())) + (" ..." if len(missing) > 5 else "")
        if on_bad_media == "raise":
            raise ValueError(
                f"deep_content_audio: {len(missing)} of {len(heard)} {what} have no readable sound "
                f"(item_idx {shown}; item_content logged their files and reasons): fix the files or "
                "set on_bad_media: skip to give them the mean factor"
            )
        logger.warning("deep_content_audio: %d of %d %s have no readable sound (item_idx %s); they get the "
                       "mean factor", len(missing), len(heard), what, shown)
    return heard


def _target_dim(config: DeepContentAudioConfig) -> int:
    # BPR's item bias is one more factor, scored against a constant 1 in x_u
    return config.factors + int(config.pretrain and config.factors_from == "bpr")


def build(
    config: DeepContentAudioConfig, train: InteractionData, item_vectors: torch.Tensor | None = None
) -> DeepContentAudio:
    """`item_vectors`: the (n_items, n_mels, frames) spectrograms of `item_content` (NaN rows
    without sound), or None (no sound in the source: the CF model alone). The factors are zeros
    here: `warm_start` copies them from the trained model, or `fit_wmf` fits them."""
    spectrograms = item_vectors if item_vectors is not None else torch.zeros(train.n_items, 0, 0)
    if not isinstance(spectrograms, torch.Tensor) or spectrograms.dim() != 3 or not spectrograms.is_floating_point():
        shape = tuple(spectrograms.shape) if isinstance(spectrograms, torch.Tensor) else type(spectrograms).__name__
        raise ValueError(
            f"deep_content_audio reads (n_items, n_mels, frames) log-mel spectrograms made by its "
            f"item_content from the items table and the media root, got {shape}"
        )
    if spectrograms.shape[0] != train.n_items:
        raise ValueError(f"deep_content_audio: {spectrograms.shape[0]} spectrograms for {train.n_items} items")
    if spectrograms.shape[1] > 0:
        if _valid_frames(spectrograms.shape[2], config) < 1:
            raise ValueError(
                f"deep_content_audio: spectrograms of {spectrograms.shape[2]} frames are too short for "
                f"{len(config.channels)} conv layers of kernel {config.kernel_size} pooling by {config.pool}"
            )
        check_sound(spectrograms, config.on_bad_media, "training items")
    return DeepContentAudio(train.n_users, train.n_items, spectrograms, _target_dim(config), config)


def warm_start(
    config: DeepContentAudioConfig, train: InteractionData, item_vectors, networks: dict[str, RecommenderNetwork]
) -> DeepContentAudio:
    """The network with x_u, y_i from the trained `factors_from` model when `config.pretrain`,
    else `build` (and `fit_wmf` fits WMF factors before the loop)."""
    net = build(config, train, item_vectors)
    if not config.pretrain:
        logger.info("deep_content_audio: pretrain is false, WMF factors are fitted here; the given models are unused")
        return net
    name = config.factors_from
    source, cls = networks[name], {"als": als.ALS, "bpr": BPRMF}[name]
    if not isinstance(source, cls):
        raise ValueError(f"deep_content_audio: the {name!r} model is a {type(source).__name__}, not a {cls.__name__}")
    found = (source.n_users, source.n_items, source.user.embedding_dim)
    wanted = (train.n_users, train.n_items, config.factors)
    if found != wanted:
        raise ValueError(
            f"the trained {name} model does not match deep_content_audio's config: (n_users, n_items, factors) "
            f"is {found} in the {name} model, {wanted} here (set factors to the {name} model's dim)"
        )
    x, y = source.user.weight.detach(), source.item.weight.detach()
    if name == "bpr":
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
        y = torch.cat([y, source.item_bias.weight.detach()], dim=1)
    net.set_factors(x, y)
    return net


def fit_wmf(network: DeepContentAudio, train: InteractionData, config: DeepContentAudioConfig, train_config) -> None:
    """`Family.pretrain`: WMF factors (Hu et al. 2008, the paper's CF model) by ALS's closed-form
    half-steps, unless `warm_start` already copied trained ones. `load` skips it."""
    if network.factors_ready:
        return
    device = network.user_factors.device
    cfg = als.ALSConfig(factors=config.factors, regularization=config.wmf_regularization, alpha=config.wmf_alpha)
    wmf = als.build(cfg, train).to(device)
    matrices = {k: v.to(device) for k, v in als.interaction_matrices(train).items()}
    for _ in range(config.wmf_iterations):
        als.loss(wmf, matrices, cfg)
    network.set_factors(wmf.user.weight, wmf.item.weight)
    logger.info("deep_content_audio: fitted %d WMF factors in %d ALS iterations", config.factors, config.wmf_iterations)


def spectrograms_from_state(state: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """What `build` received (`Recommender.load`): the spectrograms, NaN rows without sound."""
    spectrograms = state["spectrograms"]
    if spectrograms.shape[1] == 0:
        return None
    return spectrograms.masked_fill(~state["has_audio"][:, None, None], float("nan"))


def batches(
    network: DeepContentAudio, train: InteractionData, config: DeepContentAudioConfig, batch_size: int,
    generator: torch.Generator,
) -> Iterator[Batch]:
    """Shuffled batches of the items with a sound: the regression examples (none without content)."""
    if network.cnn is None:
        return
    items = torch.nonzero(network.has_audio.cpu()).squeeze(1)  # (N,)
    for idx in shuffled_batches(len(items), batch_size, generator):
        yield {"item": items[idx]}


def loss(network: DeepContentAudio, batch: Batch, config: DeepContentAudioConfig) -> torch.Tensor:
    item = batch["item"]  # (B,)
    predicted = network.cnn(network.spectrograms[item])  # (B, K) ŷ / σ
    return mse(predicted.flatten(), (network.item_factors[item] / network.target_scale).flatten())


FAMILY = Family(
    name="deep_content_audio", config=DeepContentAudioConfig, build=build, batches=batches, loss=loss,
    paper="van den Oord, Dieleman & Schrauwen 2013", pretrain=fit_wmf, warm_start_from=("als", "bpr"),
    warm_start=warm_start, item_content=item_content, content_inputs=("items", "media"),
    inputs_from_state=spectrograms_from_state,
)
