"""Image, text and audio encoders on a small synthetic shop whose categories are known.

Each encoder is pretrained on the category proxy task; its vectors must recover the department
structure (k-NN purity and a linear probe well above chance), and the error paths (corrupt or
missing media, pretrained weights) must behave as documented.
"""

from __future__ import annotations

import io
import json
import wave

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score
from threadpoolctl import threadpool_limits

from recforge.data.errors import DataError
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.encoders.audio import AudioEncoderConfig, fit_audio_encoder, log_mel, train_audio_encoder
from recforge.encoders.image import (
    ImageEncoderConfig,
    augment,
    fit_image_encoder,
    train_image_encoder,
)
from recforge.encoders.media_io import MediaError
from recforge.encoders.proxy import holdout_mask, neighbour_purity
from recforge.encoders.text import (
    UNK,
    TextEncoderConfig,
    TextVocabulary,
    fit_text_encoder,
    tokenize,
    train_text_encoder,
    trigram_ids,
)
from recforge.training.config import TrainConfig

TRAIN = TrainConfig(epochs=12, batch_size=64, lr=3e-3, weight_decay=1e-4, lr_schedule="cosine", device="cpu")
QUICK = TRAIN.model_copy(update={"epochs": 2})
IMAGE = {"image_size": 16, "widths": (8, 16, 32)}
AUDIO = {"channels": (16, 32), "dim": 32, "n_mels": 32}
TEXT = {"embedding_dim": 32, "n_filters": 16, "word2vec_epochs": 5}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # numpy's BLAS too (torch's threads: tests/conftest.py): oversubscribed threads spin on shared cores
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def shop():
    return generate_shop(ShopConfig(preset="tiny", n_items=240, image_size=16, seed=3))


@pytest.fixture(scope="module")
def top(shop) -> np.ndarray:
    return pd.factorize(shop.items["category"].str.split("/").str[0])[0]


@pytest.fixture(scope="module")
def fitted(shop):
    torch.set_num_threads(1)
    with threadpool_limits(1):
        return {
            "image": fit_image_encoder(shop.items, shop.media, ImageEncoderConfig(**IMAGE, train=TRAIN)),
            "text": fit_text_encoder(shop.items, TextEncoderConfig(**TEXT, train=TRAIN)),
            "audio": fit_audio_encoder(shop.items, shop.media, AudioEncoderConfig(**AUDIO, train=TRAIN)),
        }


def _matrix(vectors: pd.DataFrame) -> np.ndarray:
    return vectors.drop(columns="item_id").to_numpy()


def _chance(labels: np.ndarray) -> float:
    """k-NN purity of random neighbours: the probability that two items share a label."""
    p = np.bincount(labels) / len(labels)
    return float((p**2).sum())


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_vectors_recover_the_category_structure(fitted, shop, top, modality):
    result = fitted[modality]
    vectors = result.vectors
    assert list(vectors["item_id"]) == list(shop.items["item_id"])
    assert [c for c in vectors.columns if c != "item_id"] == [f"v{j}" for j in range(result.report["dim"])]
    assert (vectors.drop(columns="item_id").dtypes == np.float32).all()
    x = _matrix(vectors)
    assert np.isfinite(x).all() and x.std(axis=0).max() > 0

    purity = neighbour_purity(x, top, k=10)
    assert purity > 0.6 > 3 * _chance(top), purity
    probe = cross_val_score(LogisticRegression(max_iter=2000), x / x.std(), top, cv=4).mean()
    assert probe > 0.7 > 3 * np.bincount(top).max() / len(top), probe
    # held-out items never trained the network: this is the honest proxy accuracy (24 leaves)
    proxy = result.report["proxy"]
    assert proxy["n_heldout"] > 0 and proxy["heldout_accuracy"] > 3 * proxy["chance_accuracy"], proxy


@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_report_is_json_and_encode_reproduces_the_vectors(fitted, shop, modality):
    result = fitted[modality]
    report = json.loads(json.dumps(result.report))
    assert report["encoder"] == modality and report["n_vectors"] == report["n_items"] == len(shop.items)
    assert report["n_skipped"] == 0 and report["timings"]["train_s"] > 0
    assert result.history.epochs == TRAIN.epochs
    # the cold-start path: encoding items after training gives the same vectors
    new, skipped = result.encode(shop.items.iloc[:7], shop.media)
    assert skipped == []
    np.testing.assert_allclose(_matrix(new), _matrix(result.vectors)[:7], rtol=1e-5, atol=1e-5)


def test_vector_sizes_follow_the_configs(fitted):
    assert fitted["image"].report["dim"] == IMAGE["widths"][-1]
    assert fitted["text"].report["dim"] == TEXT["n_filters"] * 3
    assert fitted["audio"].report["dim"] == AUDIO["dim"]


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_same_seed_same_vectors_other_seed_other_vectors(shop, modality):
    callables = {k: (lambda v=v: v) for k, v in shop.media.items()}  # how Kedro's PartitionedDataset loads

    def run(seed: int, media) -> np.ndarray:
        train = QUICK.model_copy(update={"seed": seed})
        if modality == "image":
            vectors, _ = train_image_encoder(shop.items, media, ImageEncoderConfig(**IMAGE, train=train))
        elif modality == "text":
            vectors, _ = train_text_encoder(shop.items, TextEncoderConfig(**TEXT, train=train))
        else:
            vectors, _ = train_audio_encoder(shop.items, media, AudioEncoderConfig(**AUDIO, train=train))
        return _matrix(vectors)

    first = run(0, shop.media)
    np.testing.assert_array_equal(first, run(0, callables))
    assert not np.allclose(first, run(1, shop.media))


# ----------------------------------------------------------------------------- bad media
def _broken_media(shop, n: int = 2) -> tuple[dict, list[str]]:
    """Media with the first item's PNG and WAV truncated and the second item's files gone."""
    media = dict(shop.media)
    items = shop.items
    bad = list(items["item_id"][:n])
    for col in ("image_path", "audio_path"):
        media[items[col][0]] = media[items[col][0]][:40]
        del media[items[col][1]]
    return media, bad


@pytest.mark.parametrize(
    ("fit", "config", "pattern"),
    [
        (fit_image_encoder, ImageEncoderConfig(**IMAGE, train=QUICK), "images/{}.png"),
        (fit_audio_encoder, AudioEncoderConfig(**AUDIO, train=QUICK), "audio/{}.wav"),
    ],
)
def test_a_corrupt_file_raises_an_error_naming_it(shop, fit, config, pattern):
    media, _ = _broken_media(shop)
    corrupt, missing = pattern.format("i00000"), pattern.format("i00001")
    with pytest.raises(MediaError, match=corrupt) as err:
        fit(shop.items, media, config)
    assert isinstance(err.value, DataError) and "'i00000'" in str(err.value)
    media[corrupt] = shop.media[corrupt]
    with pytest.raises(MediaError, match=missing):  # a missing file is named too
        fit(shop.items, media, config)


def test_garbage_wav_bytes_raise_too(shop):
    media = dict(shop.media)
    media["audio/i00005.wav"] = b"RIFF....WAVEfmt not really a wave file"
    with pytest.raises(MediaError, match="audio/i00005.wav"):
        fit_audio_encoder(shop.items, media, AudioEncoderConfig(**AUDIO, train=QUICK))


@pytest.mark.parametrize(
    ("fit", "config"),
    [
        (fit_image_encoder, ImageEncoderConfig(**IMAGE, train=QUICK, on_bad_media="skip")),
        (fit_audio_encoder, AudioEncoderConfig(**AUDIO, train=QUICK, on_bad_media="skip")),
    ],
)
def test_skip_mode_reports_bad_files_and_writes_no_row(shop, fit, config):
    media, bad = _broken_media(shop)
    result = fit(shop.items, media, config)
    assert set(result.vectors["item_id"]).isdisjoint(bad)
    assert len(result.vectors) == len(shop.items) - len(bad)
    assert result.report["n_skipped"] == 2
    assert [s["item_id"] for s in result.report["skipped"]] == bad
    assert all(s["path"] and s["reason"] for s in result.report["skipped"])


def test_items_without_text_raise_or_are_skipped(shop):
    items = shop.items.copy()
    items.loc[3, ["title", "text"]] = pd.NA
    with pytest.raises(DataError, match="i00003"):
        fit_text_encoder(items, TextEncoderConfig(**TEXT, train=QUICK))
    result = fit_text_encoder(items, TextEncoderConfig(**TEXT, train=QUICK, on_bad_media="skip"))
    assert "i00003" not in set(result.vectors["item_id"]) and result.report["n_skipped"] == 1


def test_self_supervised_objective_learns_without_labels(shop, top):
    """SimCLR alone (the head is only an online probe on detached features) beats random features."""
    def run(epochs: int):
        train = TRAIN.model_copy(update={"epochs": epochs})
        config = ImageEncoderConfig(**IMAGE, objective="contrastive", train=train)
        return fit_image_encoder(shop.items, shop.media, config)

    untrained, learned = run(0), run(6)
    before = neighbour_purity(_matrix(untrained.vectors), top, k=10)
    after = neighbour_purity(_matrix(learned.vectors), top, k=10)
    assert after > 0.85 and after > before + 0.1, (before, after)


# ----------------------------------------------------------------------------- transfer learning
def test_pretrained_weights_load_and_frozen_blocks_stay_unchanged(shop, tmp_path):
    source = fit_image_encoder(shop.items, shop.media, ImageEncoderConfig(**IMAGE, train=QUICK))
    path = tmp_path / "image.pt"
    torch.save(source.network.state_dict(), path)
    saved = torch.load(path, weights_only=True)

    # a different label set (6 departments, not 24 leaves): the backbone loads, the head is new
    config = ImageEncoderConfig(
        **IMAGE, train=QUICK, pretrained_path=path, freeze_blocks=2, label_level="top"
    )
    tuned = fit_image_encoder(shop.items, shop.media, config)
    state = tuned.network.state_dict()
    frozen = [k for k in state if k.startswith(("stem.", "blocks.0.", "blocks.1."))]
    trained = [k for k in state if k.startswith("blocks.2.") and state[k].is_floating_point()]
    assert frozen and trained
    for k in frozen:  # weights and batch-norm running statistics alike
        torch.testing.assert_close(state[k], saved[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(state[k], saved[k]) for k in trained)
    assert state["head.weight"].shape[0] == 6
    assert tuned.report["pretrained"] == str(path) and tuned.report["frozen_blocks"] == 2


def test_pretrained_path_errors_are_clear(shop, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        fit_image_encoder(shop.items, shop.media, ImageEncoderConfig(**IMAGE, pretrained_path=missing))
    other = tmp_path / "other.pt"
    torch.save({"stem.0.weight": torch.zeros(4, 3, 3, 3)}, other)
    with pytest.raises(ValueError, match="does not fit"):
        fit_image_encoder(shop.items, shop.media, ImageEncoderConfig(**IMAGE, pretrained_path=other))
    with pytest.raises(ValidationError, match="pretrained_path"):
        ImageEncoderConfig(freeze_blocks=1)


# ----------------------------------------------------------------------------- pieces
def test_letter_trigrams_make_misspelled_words_overlap():
    right, wrong = set(trigram_ids("headphones", 2**14)), set(trigram_ids("headphnes", 2**14))
    unrelated = set(trigram_ids("cookbook", 2**14))
    assert len(right & wrong) / len(right | wrong) > 0.5
    assert not right & unrelated
    config = TextEncoderConfig(tokens="words")
    vocab = TextVocabulary([tokenize("wireless headphones")], config)
    assert vocab.encode([["headphnes"]])[0, 0] == UNK  # a word id table cannot tell


def test_trigram_encoder_places_misspelled_texts_with_their_department(shop, top):
    def misspell(text: str) -> str:
        # drop one inner letter of every longer word
        return " ".join(w[:2] + w[3:] if len(w) > 5 else w for w in text.split())

    held = shop.items.iloc[200:].copy()
    held["item_id"] = held["item_id"] + "-typo"
    held["title"] = held["title"].map(misspell)
    held["text"] = held["text"].map(misspell)
    purity = {}
    for tokens in ("trigrams", "words"):
        config = TextEncoderConfig(tokens=tokens, n_buckets=4096, word2vec=False, train=TRAIN)
        result = fit_text_encoder(shop.items.iloc[:200], config)
        train_vectors = torch.nn.functional.normalize(torch.tensor(_matrix(result.vectors)), dim=1)
        new, _ = result.encode(held)
        new_vectors = torch.nn.functional.normalize(torch.tensor(_matrix(new)), dim=1)
        nearest = (new_vectors @ train_vectors.T).topk(5, dim=1).indices.numpy()  # (40, 5)
        purity[tokens] = float((top[:200][nearest] == top[200:, None]).mean())
    # chance (a random neighbour's department matching) is about 0.17 here
    assert purity["trigrams"] > 0.5 and purity["trigrams"] > purity["words"] + 0.1, purity


def test_augment_is_a_per_image_crop_flip_and_jitter():
    x = torch.rand(3, 3, 8, 8)
    pad = 2
    centre = torch.full((3, 2), pad)
    identity = torch.ones(3, 3)
    no_flip = torch.zeros(3, dtype=torch.bool)
    torch.testing.assert_close(augment(x, centre, no_flip, identity, pad), x)
    flips = torch.tensor([True, False, True])
    out = augment(x, centre, flips, identity, pad)
    torch.testing.assert_close(out[0], x[0].flip(-1))
    torch.testing.assert_close(out[1], x[1])
    shifted = augment(x, torch.tensor([[pad + 1, pad]] * 3), no_flip, identity, pad)
    torch.testing.assert_close(shifted[:, :, :-1], x[:, :, 1:])  # one row down in the padded frame
    jittered = augment(x, centre, no_flip, torch.tensor([[1.5, 1.0, 1.0]] * 3), pad)
    assert jittered.max() <= 1.0 and jittered.mean() > x.mean()


def test_log_mel_is_batched_over_clips():
    config = AudioEncoderConfig()
    rate = config.sample_rate
    t = np.arange(config.n_samples) / rate
    clips = np.stack([np.sin(2 * np.pi * f * t) for f in (220.0, 880.0)]).astype(np.float32)
    mel = log_mel(clips, config)
    assert mel.shape == (2, config.n_mels, 1 + config.n_samples // config.hop_length)
    np.testing.assert_allclose(mel[1], log_mel(clips[1:], config)[0], rtol=1e-5, atol=1e-4)
    assert mel[0].mean(axis=1).argmax() < mel[1].mean(axis=1).argmax()  # the higher tone, the higher band


def test_audio_of_another_rate_and_stereo_is_resampled(shop):
    def wav(rate: int, channels: int, hz: float) -> bytes:
        t = np.arange(rate) / rate
        tone = (0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.repeat(tone, channels).tobytes())
        return buf.getvalue()

    result = fit_audio_encoder(shop.items, shop.media, AudioEncoderConfig(**AUDIO, train=QUICK))
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "audio_path": ["a.wav", "b.wav", "c.wav"]})
    media = {"a.wav": wav(16000, 2, 440.0), "b.wav": wav(8000, 1, 440.0), "c.wav": wav(8000, 1, 1500.0)}
    vectors, _ = result.encode(items, media)
    v = torch.nn.functional.normalize(torch.tensor(_matrix(vectors)), dim=1)
    same, other = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert same > 0.98 and same > other, (same, other)


def test_holdout_is_stratified_and_spares_singletons():
    labels = np.array([0] * 10 + [1] * 5 + [2] + [-1] * 3)
    held = holdout_mask(labels, 0.2, seed=0)
    assert held[labels == 0].sum() == 2 and held[labels == 1].sum() == 1
    assert not held[labels == 2].any() and not held[labels == -1].any()
    assert (held == holdout_mask(labels, 0.2, seed=0)).all()


def test_a_partial_train_section_keeps_the_proxy_defaults():
    config = AudioEncoderConfig.model_validate({"train": {"epochs": 3}, "channels": [8, 8]})
    assert config.train.epochs == 3 and config.train.batch_size == 64 and config.train.lr_schedule == "cosine"
    with pytest.raises(ValidationError, match="epoch"):
        TextEncoderConfig.model_validate({"train": {"epoch": 3}})


@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_linear_probe_recovers_hidden_item_factors(fitted, shop, modality):
    vectors = fitted[modality].vectors
    truth = shop.ground_truth_items.set_index(shop.ground_truth_items["item_id"].astype(str))
    factors = truth.loc[vectors["item_id"].astype(str), [f"f{k}" for k in range(8)]].to_numpy()
    x = _matrix(vectors)
    noise = np.random.default_rng(0).standard_normal(x.shape)

    def r2(z: np.ndarray) -> float:
        z = (z - z.mean(0)) / (z.std(0) + 1e-9)
        return float(np.mean([cross_val_score(Ridge(alpha=10.0), z, factors[:, k], cv=4).mean() for k in range(8)]))

    assert r2(x) > 0.3 > r2(noise) + 0.3
