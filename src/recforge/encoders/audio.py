"""Audio encoder: log-mel spectrograms and a 1-D convolutional network over time.

After van den Oord, Dieleman & Schrauwen 2013 ("Deep content-based music recommendation"): the
mel bands are the input channels and the convolutions run along time only; max-pooling in time
between layers; a global temporal pooling layer computes the mean, the maximum and the L2 norm of
every feature over the whole clip, so clips of any length give one fixed-size summary; fully
connected layers follow. The last hidden layer (the penultimate one) is the item vector. The
paper regresses collaborative-filtering factors; as a Content2Vec proxy task (Nedelec et al.
2016) we classify the item's category here, or the spoken digit on the Free Spoken Digit Dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from recforge.encoders.media_io import MediaSource, OnBadMedia, decode_audio, load_media
from recforge.encoders.proxy import (
    ContentEncoderConfig,
    ContentNetwork,
    EncoderResult,
    Loaded,
    pretrain_encoder,
)
from recforge.training.callbacks import Callback

logger = logging.getLogger(__name__)

MEL_CHUNK = 512  # clips per librosa call: bounds the STFT's memory on large catalogues


class AudioEncoderConfig(ContentEncoderConfig):
    """Hyper-parameters of the audio encoder; the vector has `dim` dimensions."""

    sample_rate: int = Field(8000, ge=1000, description="clips are resampled to this rate")
    clip_seconds: float = Field(1.0, gt=0.0, description="clips are cut or zero-padded to this length")
    peak_normalise: bool = Field(True, description="scale every clip to peak 1 (loudness is not content)")
    n_fft: int = Field(512, ge=16)
    hop_length: int = Field(128, ge=1)
    n_mels: int = Field(40, ge=4)
    channels: tuple[int, ...] = Field((64, 64, 128), min_length=1, description="filters per conv layer")
    kernel_size: int = Field(4, ge=1, description="filter length in frames (the paper uses 4)")
    pool: int = Field(2, ge=1, description="max-pooling in time after every conv layer but the last")
    dim: int = Field(64, ge=1, description="size of the hidden layer that is the vector")
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    on_bad_media: OnBadMedia = "raise"

    @model_validator(mode="after")
    def _check(self) -> AudioEncoderConfig:
        frames = 1 + self.n_samples // self.hop_length
        t = frames
        for i in range(len(self.channels)):
            t -= self.kernel_size - 1  # valid convolutions, as in the paper
            if i < len(self.channels) - 1:
                t //= self.pool
        if t < 1:
            raise ValueError(
                f"clips of {frames} frames are too short for {len(self.channels)} conv layers of "
                f"kernel {self.kernel_size} pooling by {self.pool}: lengthen clip_seconds or use fewer layers"
            )
        return self

    @property
    def n_samples(self) -> int:
        """Samples per clip."""
        return int(round(self.sample_rate * self.clip_seconds))


# ----------------------------------------------------------------------------- features
def prepare_waveform(samples: np.ndarray, rate: int, config: AudioEncoderConfig) -> np.ndarray:
    """One decoded clip -> (n_samples,) float32 at `config.sample_rate`: resampled, peak
    normalised, cut or zero-padded."""
    import librosa

    if rate != config.sample_rate:
        samples = librosa.resample(samples, orig_sr=rate, target_sr=config.sample_rate)
    if config.peak_normalise:
        samples = samples / max(float(np.abs(samples).max()), 1e-6)
    out = np.zeros(config.n_samples, dtype=np.float32)
    n = min(len(samples), config.n_samples)
    out[:n] = samples[:n]
    return out


def log_mel(waveforms: np.ndarray, config: AudioEncoderConfig) -> np.ndarray:
    """(N, n_samples) waveforms -> (N, n_mels, T) float32 log-mel spectrograms in dB."""
    import librosa

    out = []
    for lo in range(0, len(waveforms), MEL_CHUNK):
        mel = librosa.feature.melspectrogram(
            y=waveforms[lo : lo + MEL_CHUNK],
            sr=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
        )  # (C, M, T), librosa batches over the leading axis
        # ref=1.0 (not the clip's maximum) keeps levels comparable across clips
        out.append(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).astype(np.float32))
    return np.concatenate(out) if out else np.empty((0, config.n_mels, 0), dtype=np.float32)


# ----------------------------------------------------------------------------- network
class AudioCNN(ContentNetwork):
    """van den Oord et al. (2013): conv over time with mel bands as channels, global temporal
    pooling (mean, max, L2), a hidden layer (the vector), then the proxy-task head."""

    def __init__(
        self,
        n_mels: int,
        channels: Sequence[int],
        kernel_size: int,
        pool: int,
        dim: int,
        dropout: float,
        n_classes: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = n_mels
        for i, c_out in enumerate(channels):
            layers += [nn.Conv1d(c_in, c_out, kernel_size, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
            if i < len(channels) - 1 and pool > 1:
                layers.append(nn.MaxPool1d(pool))
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.hidden = nn.Linear(3 * c_in, dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)
        # per-band standardisation of the dB values, fitted on the training clips
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) log-mel -> (B, dim)."""
        x = (x - self.mel_mean[:, None]) / self.mel_std[:, None]
        h = self.convs(x)  # (B, C, T')
        # the paper's L2 pooling, divided by sqrt(T') so it does not grow with the clip length
        l2 = h.pow(2).mean(dim=2).add(1e-8).sqrt()  # (B, C)
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2), l2], dim=1)  # (B, 3C)
        return F.relu(self.hidden(pooled))  # (B, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, n_classes)."""
        return self.head(self.dropout(self.embed(x)))


# ----------------------------------------------------------------------------- entry points
def _loader(config: AudioEncoderConfig):
    def decode(data: bytes) -> np.ndarray:
        samples, rate = decode_audio(data)
        return prepare_waveform(samples, rate, config)

    def load(items: pd.DataFrame, media: Mapping[str, MediaSource]) -> Loaded:
        waves, kept, skipped = load_media(items, media, "audio_path", decode, config.on_bad_media)
        stacked = np.stack(waves) if waves else np.empty((0, config.n_samples), dtype=np.float32)
        return Loaded(torch.from_numpy(log_mel(stacked, config)), kept, skipped)  # (N, M, T)

    return load


def _builder(config: AudioEncoderConfig):
    def build(n_classes: int, x: torch.Tensor, train_rows: np.ndarray) -> AudioCNN:
        c = config
        network = AudioCNN(c.n_mels, c.channels, c.kernel_size, c.pool, c.dim, c.dropout, n_classes)
        with torch.no_grad():
            network.mel_mean.copy_(x[train_rows].mean(dim=(0, 2)))
            network.mel_std.copy_(x[train_rows].std(dim=(0, 2)).clamp_min(1e-3))
        return network

    return build


def fit_audio_encoder(
    items: pd.DataFrame,
    media: Mapping[str, MediaSource],
    config: AudioEncoderConfig,
    *,
    heldout_ids: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> EncoderResult:
    """Pretrain the audio CNN on the proxy task and vectorise every item with a usable sound.

    `heldout_ids` replaces the random stratified hold-out with the given items (e.g. FSDD's
    recordings 0-4 of every speaker and digit).
    """
    return pretrain_encoder(
        "audio",
        items,
        media,
        config,
        load=_loader(config),
        build=_builder(config),
        heldout_ids=heldout_ids,
        callbacks=callbacks,
    )


def train_audio_encoder(
    items: pd.DataFrame, media: Mapping[str, MediaSource], config: AudioEncoderConfig
) -> tuple[pd.DataFrame, dict]:
    """Pipeline entry point: (vector table `item_id, v0..v{D-1}`, report dict)."""
    result = fit_audio_encoder(items, media, config)
    return result.vectors, result.report
