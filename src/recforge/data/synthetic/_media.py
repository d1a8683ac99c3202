"""Product photos (PNG) and product sounds (WAV), rendered from category and hidden factors.

Image: department -> shape, leaf -> hue inside the department's colour band, factor 0 -> stripe
period, factor 1 -> brightness, factor 2 -> saturation, factor 3 -> size; plus position jitter,
background tint and pixel noise.
Sound: department -> pitch (4 semitones apart), leaf -> timbre (harmonic profile), factor 0 ->
detune, factor 1 -> spectral tilt, factor 2 -> tempo of amplitude pulses; plus hiss.

Rendering is vectorised over items in chunks; only the file encoding runs per item.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from recforge.data.synthetic._world import N_LEAF_PER_TOP, N_TOP, sigmoid

CHUNK = 512

Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# One shape per department: (dx, dy, r) -> inside?, all (n, S, S) broadcast.
SHAPES: tuple[Mask, ...] = (
    lambda dx, dy, r: dx**2 + dy**2 <= r**2,  # circle
    lambda dx, dy, r: np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r,  # square
    lambda dx, dy, r: (dy <= 0.75 * r) & (np.abs(dx) <= 0.6 * (dy + 0.9 * r)),  # triangle
    lambda dx, dy, r: (dx**2 + dy**2 <= r**2) & (dx**2 + dy**2 >= (0.55 * r) ** 2),  # ring
    lambda dx, dy, r: (np.minimum(np.abs(dx), np.abs(dy)) <= 0.3 * r)  # cross
    & (np.maximum(np.abs(dx), np.abs(dy)) <= r),
    lambda dx, dy, r: np.abs(dx) + np.abs(dy) <= r,  # diamond
)
assert len(SHAPES) == N_TOP

# Harmonic amplitudes per leaf: pure, odd (square-like), all (saw-like), octave-rich.
TIMBRES = np.array(
    [
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 1 / 3, 0.0, 1 / 5, 0.0],
        [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6],
        [1.0, 0.8, 0.0, 0.5, 0.0, 0.3],
    ]
)
assert len(TIMBRES) == N_LEAF_PER_TOP
BASE_PITCH_HZ = 196.0


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) hue/saturation/value in [0, 1] -> (n, 3) RGB in [0, 1]."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sectors = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    table = np.stack([np.stack(c, axis=1) for c in sectors])  # (6, n, 3)
    return table[i, np.arange(len(h))]


def render_images(
    top: np.ndarray, leaf: np.ndarray, z: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB images."""
    n = len(top)
    scale = np.float32(size / 32.0)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx = (size / 2 + rng.uniform(-0.1, 0.1, n) * size).astype(np.float32)[:, None, None]
    cy = (size / 2 + rng.uniform(-0.1, 0.1, n) * size).astype(np.float32)[:, None, None]
    dx, dy = xs[None] - cx, ys[None] - cy  # (n, S, S)
    radius = (size * (0.24 + 0.12 * sigmoid(z[:, 3]))).astype(np.float32)[:, None, None]
    inside = np.zeros((n, size, size), dtype=bool)
    for shape, mask in enumerate(SHAPES):
        sel = np.flatnonzero(top == shape)
        if len(sel):
            inside[sel] = mask(dx[sel], dy[sel], radius[sel])

    hue = (top + 0.85 * (leaf + 0.5) / N_LEAF_PER_TOP) / N_TOP + 0.01 * np.tanh(z[:, 0])
    sat = 0.55 + 0.4 * sigmoid(z[:, 2])
    val = 0.45 + 0.5 * sigmoid(z[:, 1])
    fg = (255.0 * _hsv_to_rgb(hue % 1.0, sat, val)).astype(np.float32)[:, None, None, :]  # (n, 1, 1, 3)

    period = (scale * (3.0 + 7.0 * sigmoid(-z[:, 0]))).astype(np.float32)[:, None, None]
    angle = rng.uniform(0.0, np.pi, n).astype(np.float32)[:, None, None]
    phase = dx * np.cos(angle) + dy * np.sin(angle)
    stripes = np.where(np.sin(2 * np.pi * phase / period) > 0, 1.0, 0.6).astype(np.float32)[..., None]

    bg = 225.0 + rng.normal(0.0, 10.0, (n, 1, 1, 1)) + rng.normal(0.0, 6.0, (n, 1, 1, 3))
    img = np.where(inside[..., None], fg * stripes, bg.astype(np.float32))
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_audio(
    top: np.ndarray,
    leaf: np.ndarray,
    z: np.ndarray,
    sample_rate: int,
    seconds: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n, samples) int16 mono waveforms."""
    n = len(top)
    t = (np.arange(int(round(sample_rate * seconds))) / sample_rate).astype(np.float32)[None, :]  # (1, N)
    pitch = BASE_PITCH_HZ * 2.0 ** ((4.0 * top + 0.5 * np.tanh(z[:, 0])) / 12.0)  # (n,)
    harmonics = np.arange(1, TIMBRES.shape[1] + 1)
    amps = TIMBRES[leaf] * harmonics[None, :] ** (-0.5 * sigmoid(-z[:, 1]))[:, None]
    # Harmonics above Nyquist would alias into the low bands and blur the pitch.
    amps = np.where(harmonics[None, :] * pitch[:, None] < 0.45 * sample_rate, amps, 0.0)
    freqs = (harmonics[None, :] * pitch[:, None]).astype(np.float32)  # (n, H)
    phases = rng.uniform(0.0, 2 * np.pi, (n, len(harmonics))).astype(np.float32)

    signal = np.zeros((n, t.shape[1]), dtype=np.float32)
    for h in range(len(harmonics)):
        arg = np.float32(2 * np.pi) * freqs[:, h, None] * t + phases[:, h, None]  # (n, N)
        signal += amps[:, h, None].astype(np.float32) * np.sin(arg)
    rate = (2.0 + 4.0 * sigmoid(z[:, 2])).astype(np.float32)[:, None]  # pulses per second
    pulse_phase = rng.uniform(0.0, 2 * np.pi, n).astype(np.float32)[:, None]
    envelope = 0.2 + 0.8 * ((1.0 + np.cos(2 * np.pi * rate * t + pulse_phase)) / 2.0) ** 2
    fade = np.minimum(1.0, np.minimum(t, t[:, ::-1]) / 0.01)  # 10 ms ramps: no clicks
    signal *= envelope * fade
    signal *= 0.7 / (np.abs(signal).max(axis=1, keepdims=True) + 1e-6)
    signal += rng.normal(0.0, 0.02, signal.shape).astype(np.float32)
    return np.clip(np.rint(signal * 32767.0), -32768, 32767).astype(np.int16)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of one (S, S, 3) uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono WAV bytes of one (N,) int16 waveform."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def render_media(
    top: np.ndarray,
    leaf: np.ndarray,
    z: np.ndarray,
    image_size: int,
    sample_rate: int,
    seconds: float,
    image_rng: np.random.Generator,
    audio_rng: np.random.Generator,
) -> Iterator[tuple[int, bytes, bytes]]:
    """(item index, PNG bytes, WAV bytes) for every item, rendered a chunk at a time."""
    for lo in range(0, len(top), CHUNK):
        sl = slice(lo, min(lo + CHUNK, len(top)))
        images = render_images(top[sl], leaf[sl], z[sl], image_size, image_rng)
        sounds = render_audio(top[sl], leaf[sl], z[sl], sample_rate, seconds, audio_rng)
        for j in range(len(images)):
            yield lo + j, encode_png(images[j]), encode_wav(sounds[j], sample_rate)
