"""The original recipe's waveform augmentation, rebuilt on SpeechBrain 1.x.

The original (SpeechBrain v0.5) gave tea0, tea2 and the student
``speechbrain.lobes.augment.TimeDomainSpecAugment(speeds=[95, 100, 105])``:
SpeedPerturb, DropFreq, DropChunk, in that order, each with probability 1.
The values below are read from the original hparams files (which teacher has
it) and from the v0.5 source of that class and of
``speechbrain/processing/speech_augmentation.py`` (its defaults).
"""

import os

import pytest
import torch
from conftest import REPO, TINY_MODEL
from speechbrain.augment.time_domain import DropChunk, DropFreq, SpeedPerturb

from mtkd.hparams import load_hparams

# Who had `augmentation:` in the original hparams files (a78a5718f).
ORIGINAL_AUGMENTED = {
    "tea0": True, "tea1": False, "tea2": True, "tea3": False, "tea4": False,
    "tea5": False, "tea6": False, "tea7": False, "tea8": False, "tea9": False,
    "student": True,
}  # fmt: skip
CONFIGS = {
    **{
        f"tea{k}": os.path.join(REPO, "hparams", "teachers", f"tea{k}.yaml")
        for k in range(10)
    },
    "student": os.path.join(REPO, "hparams", "train_kd.yaml"),
}
# v0.5 SpeedPerturb(orig_freq=16000, speeds=[95, 100, 105]) resampled
# 16000 Hz -> 16000 * speed // 100 Hz: one second becomes these many samples.
ORIGINAL_RESAMPLED_LENGTHS = [15200, 16000, 16800]
# TimeDomainSpecAugment's defaults, passed to DropFreq / DropChunk (v0.5), and
# DropFreq's own defaults for the band edges and width.
ORIGINAL_DROP_FREQ = {
    "drop_freq_low": 1e-14,
    "drop_freq_high": 1,
    "drop_freq_count_low": 0,
    "drop_freq_count_high": 3,
    "drop_freq_width": 0.05,
}
ORIGINAL_DROP_CHUNK = {
    "drop_length_low": 1000,
    "drop_length_high": 2000,
    "drop_count_low": 0,
    "drop_count_high": 5,
    "drop_start": 0,
    "drop_end": None,
    "noise_factor": 0.0,
}


def hparams_of(name, tmp_path):
    return load_hparams(
        [CONFIGS[name], "--data_folder", str(tmp_path), "--output_folder",
         str(tmp_path), *TINY_MODEL]
    ).hparams  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_augmenter_matches_the_original_component_by_component(name, tmp_path):
    hparams = hparams_of(name, tmp_path)
    assert hparams["augment"] is ORIGINAL_AUGMENTED[name]
    augmenter = hparams["wav_augment"]
    # All three, in the original order, on every batch, nothing concatenated.
    speed, drop_freq, drop_chunk = augmenter.augmentations.values()
    assert (type(speed), type(drop_freq), type(drop_chunk)) == (
        SpeedPerturb, DropFreq, DropChunk
    )  # fmt: skip
    assert augmenter.min_augmentations == augmenter.max_augmentations == 3
    assert not augmenter.shuffle_augmentations
    assert not augmenter.concat_original and not augmenter.parallel_augment
    assert augmenter.repeat_augment == 1 and augmenter.augment_prob == 1.0
    one_second = torch.randn(1, 16000)
    lengths = [resample(one_second).shape[1] for resample in speed.resamplers]
    assert lengths == ORIGINAL_RESAMPLED_LENGTHS
    for key, value in ORIGINAL_DROP_FREQ.items():
        assert getattr(drop_freq, key) == value, key
    for key, value in ORIGINAL_DROP_CHUNK.items():
        assert getattr(drop_chunk, key) == value, key


def zero_runs(signal):
    """Lengths of the runs of exact zeros in a 1-D tensor."""
    runs, current = [], 0
    for is_zero in (signal == 0).tolist() + [False]:
        if is_zero:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def notch_depth(signal):
    """Lowest over the median power of the spectrum (5 bins to 0.9 Nyquist),
    over the frames that no dropped chunk silenced."""
    frames = torch.stft(
        signal, 512, hop_length=256, window=torch.hann_window(512),
        return_complex=True,
    ).abs().pow(2)  # fmt: skip
    energy = frames.sum(0)
    power = frames[:, energy > 0.5 * energy.median()].mean(1)
    band = power[5 : int(257 * 0.9)]
    return float(band.min() / band.median())


def test_student_augmenter_drops_bands_and_chunks(tmp_path):
    augmenter = hparams_of("student", tmp_path)["wav_augment"]
    noise = torch.randn(1, 32000, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    augmented, lengths = augmenter(noise.clone(), torch.ones(1))
    assert torch.equal(lengths, torch.ones(1))
    assert augmented.shape[1] in (30400, 32000, 33600)  # 0.95, 1, 1.05 x
    # White noise has no exact zeros: every run is a dropped chunk (1000 to
    # 2000 samples; overlapping chunks make longer runs).
    runs = [run for run in zero_runs(augmented[0]) if run > 10]
    assert runs and all(run >= 1000 for run in runs)
    assert sum(runs) >= 1000
    # A dropped band: its power falls to under 1 % of the median, while speed
    # perturbation alone leaves the spectrum of white noise flat.
    speed = list(augmenter.augmentations.values())[0]
    assert notch_depth(speed.resamplers[0](noise)[0]) > 0.1
    assert notch_depth(augmented[0]) < 0.01
