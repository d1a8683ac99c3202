"""Reading item media for the content encoders: PNG/JPEG images via Pillow, WAV audio via soundfile.

`media` maps a path relative to the media root (the keys of `items.image_path` /
`items.audio_path`) to the file's bytes or, as Kedro's `PartitionedDataset` loads it, to a callable
returning them. A missing or undecodable file raises `MediaError` naming the file and the item; with
`on_bad_media="skip"` the item is left out instead and listed in the returned `skipped` records, so
the caller writes no vector row for it (never a silent zero vector).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
from PIL import Image

from recforge.data.errors import DataError

logger = logging.getLogger(__name__)

MediaSource = Callable[[], bytes] | bytes
OnBadMedia = Literal["raise", "skip"]
T = TypeVar("T")


class MediaError(DataError):
    """An item's image or audio file is missing or cannot be decoded."""


def _bytes_of(media: Mapping[str, MediaSource], key: str) -> bytes:
    entry = media[key]
    data = entry() if callable(entry) else entry
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"media[{key!r}] gave {type(data).__name__}, expected bytes")
    return bytes(data)


def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes -> (size, size, 3) uint8 RGB, resized with bilinear filtering when needed."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # Pillow decodes lazily; force it here so truncation fails inside our try
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """WAV (or any libsndfile format) bytes -> ((N,) float32 mono in [-1, 1], sample rate)."""
    import soundfile  # librosa's reader; imported here so image-only users do not load libsndfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)  # (N, channels)
    if samples.shape[0] == 0:
        raise ValueError("the file holds no samples")
    return samples.mean(axis=1), int(rate)


def load_media(
    items: pd.DataFrame,
    media: Mapping[str, MediaSource],
    column: str,
    decode: Callable[[bytes], T],
    on_bad_media: OnBadMedia = "raise",
) -> tuple[list[T], np.ndarray, list[dict[str, str]]]:
    """Decode the file in `items[column]` for every item.

    Returns (decoded values, the (n,) row positions in `items` they came from, skipped records
    `{item_id, path, reason}`). Raises `MediaError` naming the file and item on the first bad one
    unless `on_bad_media="skip"`.
    """
    if on_bad_media not in ("raise", "skip"):
        raise ValueError(f"on_bad_media must be 'raise' or 'skip', got {on_bad_media!r}")
    for needed in ("item_id", column):
        if needed not in items.columns:
            raise DataError(f"missing column {needed!r}; found {list(items.columns)}", source="items")
    values: list[T] = []
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    ids = items["item_id"].astype(str).tolist()
    paths = items[column].tolist()
    for pos, (item_id, path) in enumerate(zip(ids, paths, strict=True)):
        key = None if path is None or pd.isna(path) else str(path)
        try:
            if key is None:
                raise LookupError(f"item has no {column}")
            if key not in media:
                raise LookupError("file not found in the media root")
            values.append(decode(_bytes_of(media, key)))
            kept.append(pos)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file, reported below
            reason = f"{type(exc).__name__}: {exc}"
            if on_bad_media == "raise":
                raise MediaError(
                    f"item {item_id!r}: cannot read media file {key!r} ({reason})",
                    source=key or "items",
                    column=column,
                    hint="Fix or remove the file, or set on_bad_media: skip to leave such items "
                    "without a vector",
                ) from exc
            skipped.append({"item_id": item_id, "path": key or "", "reason": reason})
    if skipped:
        logger.warning(
            "skipped %d of %d items with bad media in %r (first: %s)",
            len(skipped),
            len(ids),
            column,
            skipped[0],
        )
    return values, np.asarray(kept, dtype=np.int64), skipped


def describe_skipped(skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The report section for skipped media."""
    return {"n_skipped": len(skipped), "skipped": skipped}
