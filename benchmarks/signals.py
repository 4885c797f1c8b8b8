"""Deterministic synthetic test audio for the benchmarks (no downloads).

A 16 kHz mixture that keeps changing over time, so that a context-dependent model sees
non-stationary input: harmonic notes with vibrato and attack/decay envelopes, linear and
exponential chirps, band-limited noise bursts, and a quiet noise floor.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16000


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    attack, release = min(attack, n // 2), min(release, n // 2)
    env[:attack] = np.linspace(0.0, 1.0, attack, endpoint=False)
    if release:
        env[n - release :] = np.linspace(1.0, 0.0, release)
    return env


def _add(out: np.ndarray, start: int, x: np.ndarray) -> None:
    end = min(len(out), start + len(x))
    out[start:end] += x[: end - start]


def synthetic_clip(seconds: float, *, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A ``(1, samples)`` float32 clip in [-1, 1]; the same for the same seed and length."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    out = 0.003 * rng.standard_normal(n)  # noise floor (about -50 dBFS)
    per_second = max(1, round(seconds))

    # Harmonic notes with vibrato: f0 90-500 Hz, 4-12 harmonics with 1/k roll-off.
    for _ in range(3 * per_second):
        length = int(rng.uniform(0.2, 1.5) * sample_rate)
        t = np.arange(length) / sample_rate
        f0 = rng.uniform(90.0, 500.0)
        depth, rate = rng.uniform(0.005, 0.03), rng.uniform(4.0, 7.0)
        phase = 2 * np.pi * np.cumsum(f0 * (1 + depth * np.sin(2 * np.pi * rate * t))) / sample_rate
        note = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, int(rng.integers(4, 13)) + 1))
        env = _envelope(length, int(0.02 * sample_rate), int(0.3 * length)) * np.exp(-t * rng.uniform(0.0, 2.0))
        _add(out, int(rng.integers(0, n)), rng.uniform(0.05, 0.2) * note * env)

    # Chirps: linear or exponential sweeps over 0.3-2 s between 150 Hz and 6 kHz.
    for _ in range(per_second):
        length = int(rng.uniform(0.3, 2.0) * sample_rate)
        t = np.arange(length) / sample_rate
        f_start, f_end = np.exp(rng.uniform(np.log(150.0), np.log(6000.0), size=2))
        if rng.random() < 0.5:
            freq = f_start + (f_end - f_start) * t / t[-1]
        else:
            freq = f_start * (f_end / f_start) ** (t / t[-1])
        chirp = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
        _add(out, int(rng.integers(0, n)), rng.uniform(0.05, 0.15) * chirp * _envelope(length, 160, 800))

    # Noise bursts: 30-300 ms of band-limited noise (random band, FFT-masked).
    for _ in range(2 * per_second):
        length = int(rng.uniform(0.03, 0.3) * sample_rate)
        spectrum = np.fft.rfft(rng.standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1 / sample_rate)
        low = rng.uniform(100.0, 4000.0)
        spectrum[(freqs < low) | (freqs > low * rng.uniform(1.5, 4.0))] = 0
        burst = np.fft.irfft(spectrum, length)
        burst /= np.abs(burst).max() + 1e-9
        _add(out, int(rng.integers(0, n)), rng.uniform(0.05, 0.3) * burst * _envelope(length, 40, length // 3))

    out *= 0.8 / max(1e-9, np.abs(out).max())
    return torch.from_numpy(out.astype(np.float32))[None, :]
