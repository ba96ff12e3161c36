"""Speech tokenizer: discrete units at 50 per second, the recipe of HuBERT's first iteration.

Audio is made mono and resampled to 16 kHz; every 20 ms (25 ms Hann window) a frame of features
is computed: MFCC (13, from 40 log-mel bands) or the log-mel bands themselves, with delta and
delta-delta by default (39 numbers, as HuBERT's iteration 1). Features are standardised per
dimension and k-means gives `units` clusters; each frame becomes its nearest cluster (one unit per
frame; `dedup` collapses runs of the same unit).

Decoder: training also stores each unit's mean magnitude spectrum; `decode` lays those spectra out
in time (4 overlapping sub-frames per unit, 5 ms hop) and recovers a phase with Griffin-Lim, so
any unit sequence becomes audible 16 kHz audio. It keeps the spectral envelope and loudness, not
the voice's fine detail: expect a buzzy, robotic rendering.

External mode (`SpeechTokenizer.from_units`): units made elsewhere (real HuBERT units) pass through
unchanged; their decoder is not here, so `decode` plays one steady tone per unit (a pitch on a
log scale, 20 ms each) for inspection only: it is not speech.

Items are waveforms: a 1-D array at 16 kHz, or a tuple (array, sample_rate); arrays are float
(any float dtype, nominally in [-1, 1]) or int16/int32 PCM, mono [T] or multi-channel [T, C].
Files: `save("x.json")` writes x.json (settings) and x.safetensors (arrays) next to it.
"""
from __future__ import annotations

from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import MmlmError
from .kmeans import check_ids, cluster_sums, kmeans, load_array, load_files, nearest, save_files

KIND = "speech"
SR = 16_000
HOP = 320          # 20 ms: 50 frames (units) per second
WIN = 400          # 25 ms analysis window
N_FFT = 512
SUB = 4            # synthesis sub-frames per unit (hop 80 samples, 80% window overlap)
N_MELS = 40
N_MFCC = 13
# Added to mel power before the log: about the noise floor of a quiet recording at 16 bit, so
# that empty bands of synthetic or dithered audio do not dominate features and distances.
MEL_FLOOR = 1e-5
TONE_LOW, TONE_OCTAVES = 110.0, 5  # external-unit tones: 110 Hz .. 3.5 kHz


# --- audio in ------------------------------------------------------------------------------------

def to_mono16k(item: Any, what: str = "waveform") -> np.ndarray:
    """Validate one item (array at 16 kHz, or (array, sample_rate)) and return float32 mono at 16 kHz."""
    if isinstance(item, tuple):
        if len(item) != 2:
            raise MmlmError(f"{what}: expected (waveform, sample_rate), got a tuple of {len(item)}")
        wave, sr = item
    else:
        wave, sr = item, SR
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise MmlmError(f"{what}: sample rate must be a positive integer, got {sr!r}")
    if not isinstance(wave, np.ndarray):
        raise MmlmError(f"{what}: expected a numpy array of samples, got {type(wave).__name__}")
    if wave.dtype.kind == "f":
        x = wave.astype(np.float32)
    elif wave.dtype in (np.int16, np.int32):
        x = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
    else:
        raise MmlmError(f"{what}: samples must be float, int16 or int32, got dtype {wave.dtype}")
    if x.ndim == 2 and 1 <= x.shape[1] <= 8:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise MmlmError(f"{what}: shape {wave.shape} is not mono [T] or [T, channels]")
    if x.size == 0:
        raise MmlmError(f"{what}: empty waveform")
    if not np.isfinite(x).all():
        raise MmlmError(f"{what}: waveform holds NaN or infinite samples")
    if sr != SR:
        from scipy.signal import resample_poly  # slow to import (about a second): only when needed

        g = gcd(int(sr), SR)
        x = resample_poly(x, SR // g, int(sr) // g).astype(np.float32)
    return x


# --- STFT, features, Griffin-Lim -----------------------------------------------------------------

@lru_cache(maxsize=None)
def _window() -> np.ndarray:
    return np.hanning(WIN + 2)[1:-1].astype(np.float32)  # strictly positive Hann


def _frames(x: np.ndarray, hop: int) -> np.ndarray:
    """Windows [ceil(len/hop), WIN] (a view); frame j is centred at sample j*hop + hop/2."""
    n = -(-len(x) // hop)
    left = (WIN - hop) // 2
    xp = np.pad(x, (left, (n - 1) * hop + WIN - len(x) - left))
    return np.lib.stride_tricks.sliding_window_view(xp, WIN)[::hop][:n]


def _stft(x: np.ndarray, hop: int) -> np.ndarray:
    """Complex spectra [ceil(len/hop), N_FFT//2+1]."""
    return np.fft.rfft(_frames(x, hop) * _window(), n=N_FFT, axis=1)


def _istft(spec: np.ndarray, hop: int) -> np.ndarray:
    """Weighted overlap-add inverse of `_stft`; returns len(spec) * hop samples."""
    n = len(spec)
    w = _window()
    k = -(-WIN // hop)  # frames overlapping any one sample
    frames = np.zeros((n, k * hop))
    frames[:, :WIN] = np.fft.irfft(spec, n=N_FFT, axis=1)[:, :WIN] * w
    wsq = np.zeros(k * hop)
    wsq[:WIN] = w * w
    out = np.zeros((n + k - 1) * hop)
    norm = np.zeros_like(out)
    for r in range(k):  # overlap-add one hop-wide column of every frame at a time
        out[r * hop:(r + n) * hop] += frames[:, r * hop:(r + 1) * hop].reshape(-1)
        norm[r * hop:(r + n) * hop] += np.tile(wsq[r * hop:(r + 1) * hop], n)
    left = (WIN - hop) // 2
    return (out / np.maximum(norm, 1e-3))[left:left + n * hop]


def magnitude(x: np.ndarray) -> np.ndarray:
    """Magnitude spectra [frames, 257] at 50 frames/s of float32 mono 16 kHz audio."""
    f, block = _frames(x, HOP), 4096  # blocks bound the complex intermediate on long recordings
    return np.concatenate([np.abs(np.fft.rfft(f[i:i + block] * _window(), n=N_FFT, axis=1)).astype(np.float32)
                           for i in range(0, len(f), block)])


@lru_cache(maxsize=None)
def mel_filterbank(n_mels: int = N_MELS) -> np.ndarray:
    """Triangular HTK-mel filters [n_mels, N_FFT//2+1] from 20 Hz to 8 kHz."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(20.0), mel(SR / 2), n_mels + 2))
    freqs = np.linspace(0, SR / 2, N_FFT // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return fb.astype(np.float32)


def log_mel(mag: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Natural log of mel-band power [frames, n_mels] (plus MEL_FLOOR)."""
    return np.log((mag.astype(np.float32) ** 2) @ mel_filterbank(n_mels).T + MEL_FLOOR)


def _deltas(f: np.ndarray) -> np.ndarray:
    """Regression deltas over +-2 frames (HTK formula), edges repeated."""
    p = np.pad(f, ((2, 2), (0, 0)), mode="edge")
    n = len(f)
    return (p[3:3 + n] - p[1:1 + n] + 2.0 * (p[4:4 + n] - p[0:n])) / 10.0


def features(mag: np.ndarray, kind: str = "mfcc", deltas: bool = True) -> np.ndarray:
    """Frame features [frames, D] from magnitude spectra: MFCC-13 or log-mel-40 (+ deltas, delta-deltas)."""
    from scipy.fft import dct

    f = log_mel(mag)
    if kind == "mfcc":
        f = dct(f, type=2, norm="ortho", axis=1)[:, :N_MFCC]
    if deltas:
        d = _deltas(f)
        f = np.concatenate([f, d, _deltas(d)], axis=1)
    return f.astype(np.float32)


def griffin_lim(mag: np.ndarray, hop: int, iters: int, seed: int = 0) -> np.ndarray:
    """Waveform whose STFT magnitude (at `hop`) approximates `mag`: fast Griffin-Lim (momentum 0.99)."""
    rng = np.random.default_rng(seed)
    angles = np.exp(2j * np.pi * rng.random(mag.shape))
    prev = np.zeros(mag.shape, dtype=np.complex128)
    alpha = 0.99
    for _ in range(iters):
        rebuilt = _stft(_istft(mag * angles, hop), hop)
        angles = rebuilt - (alpha / (1 + alpha)) * prev
        angles /= np.abs(angles) + 1e-16
        prev = rebuilt
    return _istft(mag * angles, hop)


def log_spectral_distance(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Sum over frames of the RMS difference in dB between the 40-band mel spectra of x and y
    (16 kHz mono; the shorter length is used), and the number of frames."""
    n = min(len(x), len(y))
    if n == 0:
        return 0.0, 0
    a = 10.0 * log_mel(magnitude(x[:n])) / np.log(10.0)
    b = 10.0 * log_mel(magnitude(y[:n])) / np.log(10.0)
    return float(np.sqrt(((a - b) ** 2).mean(axis=1)).sum()), len(a)


# --- external units ------------------------------------------------------------------------------

def load_units(path: str | Path, units: int | None = None) -> list[np.ndarray]:
    """Read external unit sequences: a .npy int array [n, T], or a .npz of 1-D int arrays
    (in archive order). Values must be >= 0 (and < `units` when given). Returns int64 arrays."""
    path = Path(path)
    data = load_array(path, ".npy/.npz")
    if isinstance(data, np.ndarray):
        if data.ndim != 2 or 0 in data.shape:
            raise MmlmError(f"{path}: expected a 2-D unit array [n, T], got shape {data.shape}")
        seqs = list(data)
        names = [f"row {i}" for i in range(len(seqs))]
    else:
        with data:
            names = list(data.files)
            try:
                seqs = [data[k] for k in names]
            except ValueError as e:
                raise MmlmError(f"{path}: an array in the archive cannot be read without pickle ({e})") from None
        if not seqs:
            raise MmlmError(f"{path}: the archive holds no unit arrays")
    return [check_units(s, units, f"{path} [{name}]") for s, name in zip(seqs, names)]


def check_units(seq: np.ndarray, units: int | None, what: str) -> np.ndarray:
    """Validate one unit sequence: 1-D, non-empty, integers >= 0 (and < `units` when given)."""
    seq = np.asarray(seq)
    if seq.dtype.kind not in "iu":
        raise MmlmError(f"{what}: units must be integers, got dtype {seq.dtype}")
    if seq.ndim != 1 or seq.size == 0:
        raise MmlmError(f"{what}: expected a non-empty 1-D unit sequence, got shape {seq.shape}")
    if seq.min() < 0:
        raise MmlmError(f"{what}: units must be non-negative, found {int(seq.min())}")
    if units is not None and seq.max() >= units:
        raise MmlmError(f"{what}: unit {int(seq.max())} is outside {units} units")
    return seq.astype(np.int64)


# --- the tokenizer -------------------------------------------------------------------------------

class SpeechTokenizer:
    """Waveforms <-> unit sequences at 50 units/s. Build with `train`, `random`, `from_units` or `load`."""

    ARRAYS = ("centroids", "mean", "std", "spectra")

    def __init__(self, settings: dict, arrays: dict[str, np.ndarray] | None = None):
        self._settings = dict(settings)
        arrays = arrays or {}
        self.centroids_ = arrays.get("centroids")  # [units, D] in standardised feature space
        self.mean_ = arrays.get("mean")            # [D] feature mean and std of the training frames
        self.std_ = arrays.get("std")
        self.spectra_ = arrays.get("spectra")      # [units, 257] mean magnitude spectrum per unit

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def train(cls, waves: Iterable[Any], *, units: int = 128, features: str = "mfcc", deltas: bool = True,
              dedup: bool = False, seed: int = 0, iters: int = 20, sample: int = 50_000,
              gl_iters: int = 32) -> "SpeechTokenizer":
        """k-means with `units` clusters on at most `sample` standardised feature frames."""
        return cls._fit(waves, "kmeans", dict(units=units, features=features, deltas=deltas, dedup=dedup,
                                              seed=seed, iters=iters, sample=sample, gl_iters=gl_iters))

    @classmethod
    def random(cls, waves: Iterable[Any], *, units: int = 128, features: str = "mfcc", deltas: bool = True,
               seed: int = 0, gl_iters: int = 32) -> "SpeechTokenizer":
        """Baseline: `units` centroids drawn from N(0, I) in the standardised feature space (so
        matched to the data's per-feature mean and variance) instead of learnt; the standardisation
        and the per-unit decoder spectra are fitted on `waves` as in `train`."""
        return cls._fit(waves, "random", dict(units=units, features=features, deltas=deltas, dedup=False,
                                              seed=seed, gl_iters=gl_iters))

    @classmethod
    def _fit(cls, waves: Iterable[Any], init: str, s: dict) -> "SpeechTokenizer":
        if isinstance(s["units"], bool) or not isinstance(s["units"], (int, np.integer)) or s["units"] < 1:
            raise MmlmError(f"speech tokenizer: units must be a positive integer, got {s['units']!r}")
        if s["features"] not in ("mfcc", "logmel"):
            raise MmlmError(f"speech tokenizer: features must be 'mfcc' or 'logmel', got {s['features']!r}")
        waves = [to_mono16k(w, f"training waveform {i}") for i, w in enumerate(waves)]
        if not waves:
            raise MmlmError("speech tokenizer: no training waveforms")
        feats = np.concatenate([features(magnitude(w), s["features"], s["deltas"]) for w in waves])
        mean, std = feats.mean(0), np.maximum(feats.std(0), 1e-5)
        z = (feats - mean) / std
        k = int(s["units"])
        if init == "kmeans":
            centroids = kmeans(z, k, seed=s["seed"], iters=s["iters"], sample=s["sample"])
        else:
            centroids = np.random.default_rng(s["seed"]).standard_normal((k, z.shape[1])).astype(np.float32)
        labels = nearest(z, centroids)[0]
        # decoder: mean magnitude spectrum of the frames each unit was given (all frames' mean if none)
        sums, at = np.zeros((k, N_FFT // 2 + 1)), 0
        for w in waves:  # magnitudes recomputed one wave at a time, to bound memory
            mag = magnitude(w)
            sums += cluster_sums(labels[at:at + len(mag)], mag, k)
            at += len(mag)
        counts = np.bincount(labels, minlength=k)
        spectra = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], sums.sum(0) / at)
        arrays = dict(centroids=centroids, mean=mean, std=std, spectra=spectra.astype(np.float32))
        return cls(dict(mode="units", init=init, sample_rate=SR, frame_rate=SR // HOP, **s), arrays)

    @classmethod
    def from_units(cls, seqs: Iterable[np.ndarray], units: int | None = None) -> "SpeechTokenizer":
        """External mode for unit sequences made elsewhere; the unit count is `units` or, when
        not given, the largest unit + 1."""
        seqs = [check_units(s, units, f"external unit sequence {i}") for i, s in enumerate(seqs)]
        if not seqs:
            raise MmlmError("external units: no unit sequences")
        n = int(units) if units is not None else max(int(s.max()) for s in seqs) + 1
        return cls(dict(mode="external", units=n, sample_rate=SR, frame_rate=SR // HOP))

    # --- the tokenizer face --------------------------------------------------------------------

    @property
    def external(self) -> bool:
        return self._settings["mode"] == "external"

    @property
    def n_tokens(self) -> int:
        return int(self._settings["units"])

    @property
    def settings(self) -> dict:
        return dict(self._settings)

    def frame_units(self, wave: Any) -> np.ndarray:
        """One unit per 20 ms frame (never deduplicated): int64[ceil(seconds * 50)]."""
        if self.external:
            raise MmlmError("external speech units: there is no encoder here; pass the unit sequences themselves")
        x = to_mono16k(wave)
        z = (features(magnitude(x), self._settings["features"], self._settings["deltas"]) - self.mean_) / self.std_
        return nearest(z, self.centroids_)[0]

    def encode(self, wave: Any) -> np.ndarray:
        """Waveform -> int64 units (runs collapsed when `dedup`); external mode: a unit sequence passes through."""
        if self.external:
            return check_units(wave, self.n_tokens, "external speech units")
        ids = self.frame_units(wave)
        if self._settings["dedup"] and len(ids):
            ids = ids[np.r_[True, ids[1:] != ids[:-1]]]
        return ids

    def decode(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Units -> (float32 mono waveform in [-1, 1], 16000): 320 samples per unit."""
        ids = check_ids(ids, self.n_tokens, "speech units").reshape(-1)
        if ids.size == 0:
            return np.zeros(0, np.float32), SR
        if self.external:
            freq = TONE_LOW * 2.0 ** (TONE_OCTAVES * ids / max(self.n_tokens, 1))
            phase = 2 * np.pi * np.cumsum(np.repeat(freq, HOP)) / SR
            return (0.3 * np.sin(phase)).astype(np.float32), SR
        mag = np.repeat(self.spectra_[ids], SUB, axis=0).astype(np.float64)
        y = griffin_lim(mag, HOP // SUB, self._settings["gl_iters"], self._settings["seed"])
        return np.clip(y, -1.0, 1.0).astype(np.float32), SR

    def save(self, path: str | Path) -> None:
        arrays = {} if self.external else dict(centroids=self.centroids_, mean=self.mean_, std=self.std_,
                                                spectra=self.spectra_)
        save_files(path, KIND, self._settings, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "SpeechTokenizer":
        settings, arrays = load_files(path, KIND, ())
        if settings.get("mode") == "external":
            return cls(settings)
        missing = [n for n in cls.ARRAYS if n not in arrays]
        if missing:
            raise MmlmError(f"{path}: speech tokenizer arrays missing: {', '.join(missing)}")
        u = settings["units"]
        if arrays["centroids"].shape[0] != u or arrays["spectra"].shape != (u, N_FFT // 2 + 1):
            raise MmlmError(f"{path}: array shapes do not match {u} units")
        return cls(settings, {n: arrays[n].astype(np.float32) for n in cls.ARRAYS})


def reconstruction_error(tok: SpeechTokenizer, waves: Iterable[Any]) -> float:
    """Log-spectral distance in dB (40 mel bands, averaged over frames) between each waveform and
    decode(units(waveform)): what is lost by the units, the decoder spectra and Griffin-Lim together."""
    if tok.external:
        raise MmlmError("reconstruction error needs learnt units; external units have no decoder here")
    total, frames = 0.0, 0
    for i, w in enumerate(waves):
        x = to_mono16k(w, f"waveform {i}")
        y, _ = tok.decode(tok.frame_units(x))
        s, n = log_spectral_distance(x, y)
        total, frames = total + s, frames + n
    if frames == 0:
        raise MmlmError("reconstruction error: no waveforms")
    return total / frames
