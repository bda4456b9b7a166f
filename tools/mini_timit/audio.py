"""Audio: resampling, noise, and NIST SPHERE files like LDC's TIMIT.

SPHERE files are read by the preparation script's reader (``read_sphere`` of
``timit_prepare.py``), the one the recipe itself uses.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from tools.mini_timit.errors import MiniTimitError

SAMPLE_RATE = 16000  # Hz, TIMIT's


_kernels = {}


def _resample_kernel(orig_sr, new_sr, zero_crossings=24, rolloff=0.945):
    """Polyphase windowed-sinc kernel: (taps, new phases), its half width,
    and the reduced rates (up, down)."""
    g = gcd(orig_sr, new_sr)
    up, down = new_sr // g, orig_sr // g
    cutoff = 0.5 * rolloff * min(1.0, up / down)  # cycles per input sample
    half = int(np.ceil(zero_crossings / (2.0 * cutoff)))
    taps = np.arange(-half, down + half)
    phases = np.arange(up) * (down / up)  # input position of each output
    d = taps[None, :] - phases[:, None]
    window = np.where(np.abs(d) <= half, 0.5 * (1.0 + np.cos(np.pi * d / half)), 0)
    kernel = 2.0 * cutoff * np.sinc(2.0 * cutoff * d) * window
    return np.ascontiguousarray(kernel.T), half, up, down


def _resample(x, orig_sr, new_sr):
    """float64 signal resampled from ``orig_sr`` to ``new_sr`` (numpy only).

    A polyphase windowed-sinc filter (Hann window, 24 zero crossings a side,
    flat to 0.945 of the lower Nyquist frequency): every block of ``down``
    input samples gives ``up`` outputs, all blocks in one matrix product.
    Output length is ``ceil(len(x) * new_sr / orig_sr)``.
    """
    key = (orig_sr, new_sr)
    if key not in _kernels:
        _kernels[key] = _resample_kernel(orig_sr, new_sr)
    kernel, half, up, down = _kernels[key]
    n_out = -(-len(x) * up // down)
    if n_out == 0:
        return np.zeros(0)
    blocks = -(-n_out // up)
    width = kernel.shape[0]
    padded = np.zeros((blocks - 1) * down + width)
    padded[half : half + len(x)] = x
    step = padded.strides[0]
    view = np.lib.stride_tricks.as_strided(
        padded, (blocks, width), (step * down, step), writeable=False
    )
    return (view @ kernel).reshape(-1)[:n_out]


def _noise(rng, n, pink):
    """Unit-variance white or pink (1/f power) noise of ``n`` samples."""
    if not pink or n < 4:
        return rng.standard_normal(n)
    m = 1 << (n - 1).bit_length()  # a fast FFT size
    spectrum = np.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    spectrum /= np.sqrt(f)
    spectrum[0] = 0.0
    pink_noise = np.fft.irfft(spectrum, m)[:n]
    return pink_noise / (np.std(pink_noise) + 1e-12)


def write_sphere(path, samples, utterance_id, sample_rate=SAMPLE_RATE):
    """Writes int16 ``samples`` as a NIST SPHERE file like LDC's TIMIT.

    The 1024-byte header holds the fields of TIMIT's own headers (``NIST_1A``,
    ``database_id -s5 TIMIT``, ..., ``sample_sig_bits -i 16``, ``end_head``),
    then come the little-endian 16-bit samples.
    """
    samples = np.asarray(samples, dtype="<i2")
    lo = int(samples.min()) if len(samples) else 0
    hi = int(samples.max()) if len(samples) else 0
    lines = [
        "NIST_1A",
        "   1024",
        "database_id -s5 TIMIT",
        "database_version -s3 1.0",
        f"utterance_id -s{len(utterance_id)} {utterance_id}",
        "channel_count -i 1",
        f"sample_count -i {len(samples)}",
        f"sample_rate -i {int(sample_rate)}",
        f"sample_min -i {lo}",
        f"sample_max -i {hi}",
        "sample_n_bytes -i 2",
        "sample_byte_format -s2 01",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    head = ("\n".join(lines) + "\n").encode("ascii")
    if len(head) > 1024:
        raise MiniTimitError(f"SPHERE header of {path} longer than 1024 bytes")
    head += b" " * (1024 - len(head))
    with open(path, "wb") as f:
        f.write(head)
        f.write(samples.tobytes())
