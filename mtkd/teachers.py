"""Teachers rebuilt from their own training runs, and what they teach.

A teacher list file (``--teacher_list``; ``tea_models_dir`` in the YAML)
names one ``model.ckpt`` per line. Everything else comes from the run that
saved it::

    <run>/hyperparams.yaml            every value the run used
    <run>/save/model_config.json      CTCAttentionASR kwargs, features, indices
    <run>/save/label_encoder.txt      the labels (shared by all teachers)
    <run>/save/CKPT+.../model.ckpt    the weights (the list file's line)
    <run>/save/CKPT+.../normalize.ckpt  global feature statistics

``teacher_targets`` runs a group of teachers over one batch so that no padding
reaches any teacher: features are computed from each unpadded waveform, the
encoder (bidirectional RNNs) only ever sees utterances of equal length
together, and the teacher-forced decoder is batched with masked attention.
The result of an utterance is then the same whatever batch it came in.
"""

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.edit_distance import wer_details_for_batch

from mtkd import RecipeError
from mtkd.consensus import consensus, unlabelled_scores
from mtkd.disk import file_checksum
from mtkd.model import MODEL_CONFIG_FILE, CTCAttentionASR, make_features
from mtkd.runs import RunFolder, best_checkpoint_model_path

# Per-utterance error rates are capped, as in the paper (an insertion-heavy
# hypothesis would otherwise dominate the teacher weighting).
PER_CAP = 100.0
SPECIAL_INDEX_KEYS = ("blank_index", "bos_index", "eos_index")


class TeacherListError(RecipeError):
    """A teacher list line that cannot be used (names the line and the path)."""


def read_teacher_list(path):
    """Reads a teacher list file: one ``model.ckpt`` path per line.

    Blank lines and ``#`` comments (whole-line or trailing) are skipped; relative
    paths resolve against the list file's folder.
    Returns ``[(line_no, absolute path), ...]`` with 1-based line numbers.
    """
    if not os.path.isfile(path):
        raise TeacherListError(
            f"Teacher list file not found: {path}. Give `--teacher_list` a text "
            "file with one model.ckpt path per line."
        )
    base = os.path.dirname(os.path.abspath(path))
    entries, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            abs_path = os.path.normpath(os.path.join(base, os.path.expanduser(text)))
            if abs_path in seen:
                raise TeacherListError(
                    f"{path} line {line_no}: {abs_path} is already listed on line "
                    f"{seen[abs_path]}; list each teacher once."
                )
            seen[abs_path] = line_no
            entries.append((line_no, abs_path))
    if not entries:
        raise TeacherListError(f"{path} lists no teacher (one model.ckpt per line).")
    return entries


def write_teacher_list(path, run_folders, written_by="slurm/teacher_list.py"):
    """Writes a teacher list file: line K is the best valid checkpoint's
    ``model.ckpt`` of ``run_folders[K]`` (a train_teacher.py output folder).

    The file is replaced atomically (array tasks may all write it at once);
    returns the paths written. A folder without a finished epoch is a
    RecipeError naming it.
    """
    lines = []
    for folder in run_folders:
        try:
            lines.append(best_checkpoint_model_path(os.path.join(folder, "save")))
        except (FileNotFoundError, OSError) as err:
            raise RecipeError(
                f"{folder}: no finished teacher there ({err}). Train it first "
                "(train_teacher.py with --output_folder this folder; for a "
                "student that teaches the next generation, train_kd.py)."
            ) from err
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# Written by {written_by}: line K is teacher K.\n")
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)
    return lines


@dataclass
class TeacherFiles:
    """A teacher's saved files and config, read without loading any weights."""

    model_ckpt: str
    normalize_ckpt: str
    config: dict
    labels: list  # ind2lab as a list: labels[i] is the label of index i
    hyperparams_file: str
    label_encoder_file: str
    where: str = ""  # "LIST line N (path)" for error messages
    line_no: int = None  # 1-based line of the teacher list file

    @property
    def special_indices(self):
        """{"blank_index": i, "bos_index": j, "eos_index": k}."""
        return {key: self.config[key] for key in SPECIAL_INDEX_KEYS}


def _where(model_ckpt, line_no=None, list_path=None):
    if line_no is None:
        return model_ckpt
    return f"{list_path or 'teacher list'} line {line_no} ({model_ckpt})"


def _require_file(path, where, what, fix):
    if not os.path.isfile(path):
        raise TeacherListError(f"{where}: {what} not found: {path}. {fix}")


CONFIG_KEYS = ("model", "features", *SPECIAL_INDEX_KEYS, "label_encoder")


def _read_config(path, where):
    """model_config.json as a dict, with the keys stage 2 needs."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise TeacherListError(f"{where}: cannot read {path} ({err}).") from err
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise TeacherListError(
            f"{where}: {path} lacks {missing}; was it written by this recipe's "
            "train_teacher.py?"
        )
    return config


def read_teacher_files(model_ckpt, line_no=None, list_path=None):
    """Finds and checks a teacher's files; returns a ``TeacherFiles``.

    Raises ``TeacherListError`` naming the list line when a file is missing or
    the config does not fit its label encoder.
    """
    where = _where(model_ckpt, line_no, list_path)
    fix_line = "Check this line of the teacher list (the best checkpoint's path "
    fix_line += "is printed at the end of train_teacher.py)."
    _require_file(model_ckpt, where, "model checkpoint", fix_line)
    run = RunFolder.of_checkpoint(model_ckpt)
    save_dir = run.save_folder
    fix_run = "The line must point into a training run's save/CKPT+*/ folder."
    normalize_ckpt = os.path.join(os.path.dirname(model_ckpt), "normalize.ckpt")
    _require_file(normalize_ckpt, where, "normalize.ckpt (feature statistics)", fix_run)
    config_path = run.model_config_file
    _require_file(config_path, where, MODEL_CONFIG_FILE, fix_run)
    config = _read_config(config_path, where)
    encoder_path = run.label_encoder_file(config)
    _require_file(encoder_path, where, "label encoder", fix_run)
    encoder = load_label_encoder(encoder_path)
    labels = [encoder.ind2lab[i] for i in range(len(encoder))]
    if config["model"]["output_neurons"] != len(labels):
        raise TeacherListError(
            f"{where}: the model has {config['model']['output_neurons']} outputs "
            f"but {encoder_path} has {len(labels)} labels; the run's files do not "
            "belong together."
        )
    hyperparams_file = os.path.normpath(
        os.path.join(save_dir, config.get("hyperparams", "../hyperparams.yaml"))
    )
    return TeacherFiles(
        model_ckpt,
        normalize_ckpt,
        config,
        labels,
        hyperparams_file,
        encoder_path,
        where,
        line_no,
    )


def load_label_encoder(path):
    """A saved CTCTextEncoder, its size taken as it is (no length warning)."""
    encoder = CTCTextEncoder()
    encoder.load(path)
    encoder.expect_len(len(encoder))
    return encoder


def check_same_labels(reference, other):
    """Raises when ``other`` (TeacherFiles) has labels or indices unlike ``reference``.

    Every teacher must predict over the same label set, in the same order, with
    the same blank/bos/eos indices: the stored targets are indexed by label id.
    """
    problems = []
    if other.labels != reference.labels:
        diff = [
            i
            for i in range(max(len(other.labels), len(reference.labels)))
            if other.labels[i : i + 1] != reference.labels[i : i + 1]
        ]
        problems.append(
            f"labels differ at indices {diff[:5]} ({len(other.labels)} vs "
            f"{len(reference.labels)} labels)"
        )
    for key in SPECIAL_INDEX_KEYS:
        if other.config[key] != reference.config[key]:
            problems.append(f"{key} {other.config[key]} vs {reference.config[key]}")
    if other.config.get("phn_set") != reference.config.get("phn_set"):
        problems.append(
            f"phn_set {other.config.get('phn_set')} vs "
            f"{reference.config.get('phn_set')}"
        )
    if problems:
        raise TeacherListError(
            f"{other.where}: its label encoder does not match the first teacher's, "
            f"{reference.where}: {'; '.join(problems)}. All teachers must be "
            "trained with the same phn_set and blank/bos/eos indices; retrain "
            "this one or remove its line."
        )


def check_teacher_list(list_path, phn_set=None):
    """Reads every line's files (no weights) and checks they share one label set.

    Arguments
    ---------
    list_path : str
        The teacher list file.
    phn_set : int, optional
        The run's phone set; every teacher must have been trained on it.

    Returns ``[TeacherFiles, ...]`` in list order. The same teacher on two
    lines (``check_no_teacher_twice``) is refused.
    """
    files = [
        read_teacher_files(path, line_no, list_path)
        for line_no, path in read_teacher_list(list_path)
    ]
    check_no_teacher_twice(files)
    for other in files[1:]:
        check_same_labels(files[0], other)
    if phn_set is not None and files[0].config.get("phn_set") != phn_set:
        raise TeacherListError(
            f"{files[0].where}: trained on phn_set {files[0].config.get('phn_set')} "
            f"but this run uses phn_set {phn_set}; set `--phn_set "
            f"{files[0].config.get('phn_set')}` or use other teachers."
        )
    return files


def check_no_teacher_twice(files):
    """Raises when two lines name the same teacher: the same ``model.ckpt``
    bytes (sha256), whether through a linked folder or a copy of the run. A
    teacher listed twice would count twice in every weighting and in the
    consensus of the unlabelled audio."""
    first_with = {}
    for teacher in files:
        checksum = file_checksum([teacher.model_ckpt])
        first = first_with.setdefault(checksum, teacher)
        if first is teacher:
            continue
        same_file = os.path.realpath(first.model_ckpt) == os.path.realpath(
            teacher.model_ckpt
        )
        how = (
            f"the same file ({os.path.realpath(teacher.model_ckpt)}) through a link"
            if same_file
            else "a copy of it"
        )
        raise TeacherListError(
            f"{teacher.where}: the same teacher as line {first.line_no} "
            f"({first.model_ckpt}): {how}, with the same weights (sha256 "
            f"{checksum[:16]}...). A teacher listed twice would count twice in "
            "the weighting and the consensus: list each teacher once."
        )


def pipeline_label_keys(files):
    """The hyperparameters the shared data pipeline needs, taken from the
    teachers: blank/bos/eos indices and ``output_neurons`` (label count)."""
    return {**files[0].special_indices, "output_neurons": len(files[0].labels)}


def check_run_labels(label_encoder, files):
    """The run's phn_set label encoder must be the teachers' (ids are shared)."""
    labels = [label_encoder.ind2lab[i] for i in range(len(label_encoder))]
    if labels != files[0].labels:
        raise TeacherListError(
            f"{files[0].where}: its label encoder ({files[0].label_encoder_file}) "
            "differs from the one this recipe builds for its phn_set (labels or "
            "order). Retrain the teachers with this version of the recipe."
        )


@dataclass
class Teacher:
    """A teacher ready to run: model and normaliser in eval mode on ``device``."""

    model: CTCAttentionASR
    normalizer: InputNormalization
    features: dict  # {"sample_rate", "n_fft", "n_mels"}
    label_encoder: CTCTextEncoder
    config: dict  # model_config.json
    path: str  # absolute path of model.ckpt
    files: TeacherFiles = None
    index: int = 0  # position in the teacher list (0-based)
    checksum: str = ""  # sha256 of model.ckpt, normalize.ckpt, model_config.json

    @property
    def features_key(self):
        """Hashable feature settings: teachers with equal keys share features."""
        return tuple(sorted(self.features.items()))

    def describe(self):
        """JSON-able record of this teacher for the store's metadata."""
        hyperparams = None
        if os.path.isfile(self.files.hyperparams_file):
            with open(self.files.hyperparams_file, encoding="utf-8") as f:
                hyperparams = f.read()
        return {
            "index": self.index,
            "path": self.path,
            "checksum": self.checksum,
            "config": self.config,
            "hyperparams_file": self.files.hyperparams_file,
            "hyperparams": hyperparams,
        }


def load_normalizer(path, device):
    """InputNormalization (global) with the statistics its checkpointer saved."""
    normalizer = InputNormalization(norm_type="global")
    # `_load` is the loader hook SpeechBrain's Checkpointer calls on recovery.
    normalizer._load(path)
    normalizer = normalizer.to(device)
    normalizer.eval()
    return normalizer


def load_teacher(model_ckpt, device="cpu", line_no=None, list_path=None, index=0):
    """Rebuilds one teacher from the files its training run saved.

    Arguments
    ---------
    model_ckpt : str
        Path of the teacher's ``model.ckpt`` (a teacher list line).
    device : str
        "cpu", "cuda", "cuda:1", ...
    line_no, list_path : optional
        Where the path came from, for error messages.
    index : int
        The teacher's position in the list (0-based).
    """
    files = read_teacher_files(model_ckpt, line_no, list_path)
    model = CTCAttentionASR(**files.config["model"])
    state = _read_torch_file(model_ckpt, files.where)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:
        raise TeacherListError(
            f"{files.where}: the weights do not load into the architecture of "
            f"its {MODEL_CONFIG_FILE} ({str(err).splitlines()[0]}). Is the "
            "checkpoint from this run?"
        ) from err
    model.to(device).eval()
    encoder = load_label_encoder(files.label_encoder_file)
    _read_torch_file(files.normalize_ckpt, files.where)  # a damaged file: say so
    return Teacher(
        model=model,
        normalizer=load_normalizer(files.normalize_ckpt, device),
        features=dict(files.config["features"]),
        label_encoder=encoder,
        config=files.config,
        path=model_ckpt,
        files=files,
        index=index,
        checksum=teacher_checksum(files),
    )


def _read_torch_file(path, where):
    """A torch checkpoint file's contents, or a TeacherListError naming it
    (a damaged or foreign file makes torch raise pickle or zip errors)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip, OS errors alike
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise TeacherListError(
            f"{where}: {path} cannot be read as a torch checkpoint "
            f"({type(err).__name__}: {reason}). The file is damaged or not a "
            "teacher checkpoint: copy it again from the teacher's run, or point "
            "the line at another checkpoint of that run."
        ) from None


def teacher_checksum(files):
    """sha256 over a teacher's weights, statistics and config."""
    config_path = RunFolder.of_checkpoint(files.model_ckpt).model_config_file
    return file_checksum([files.model_ckpt, files.normalize_ckpt, config_path])


def load_teachers(list_path, indices, device="cpu"):
    """Loads the teachers at ``indices`` (0-based list positions) of a list file."""
    entries = read_teacher_list(list_path)
    return [
        load_teacher(entries[k][1], device, entries[k][0], list_path, index=k)
        for k in indices
    ]


# --------------------------------------------------------------------------
# Running teachers over a batch without letting padding in.


@dataclass
class UttTargets:
    """One teacher's targets for one utterance (CPU tensors).

    ``ctc_hyp`` [H] int64 label ids; ``att_dist`` [L+1, V] float32 (rows sum to
    1); ``ctc_per`` / ``att_per`` percent in [0, 100]; ``ctc_edits`` /
    ``att_edits`` uncapped edit counts (for corpus-level PER); ``att_hyp``
    [L'] int64 the teacher-forced argmax cut at eos (not stored).
    """

    ctc_hyp: torch.Tensor
    att_dist: torch.Tensor
    ctc_per: float
    att_per: float
    ctc_edits: int
    att_edits: int
    att_hyp: torch.Tensor = None


def crop_waveforms(wavs, wav_lens):
    """Padded batch [B, S] + relative lengths [B] -> list of B unpadded [S_b]."""
    n_samples = torch.round(wav_lens * wavs.shape[1]).long().tolist()
    return [wavs[b, :n] for b, n in enumerate(n_samples)]


_FBANKS = {}


def unpadded_features(waveforms, features, device):
    """Filterbanks of each waveform alone: list of [F_b, n_mels] float32.

    Each utterance is framed on its own: Fbank's centred STFT would otherwise
    see the batch's zero padding in an utterance's last frames.
    """
    key = (tuple(sorted(features.items())), str(device))
    if key not in _FBANKS:
        _FBANKS[key] = make_features(**features).to(device)
    fbank = _FBANKS[key]
    return [fbank(w.to(device).unsqueeze(0))[0] for w in waveforms]


def _equal_length_groups(lengths):
    """Indices grouped by equal length: {length: [b, ...]} in first-seen order."""
    groups = {}
    for b, n in enumerate(lengths):
        groups.setdefault(n, []).append(b)
    return groups


def encode_unpadded(teacher, feats):
    """Filterbanks -> normalised -> encoder outputs, never mixing lengths.

    ``feats``: list of B [F_b, n_mels]. Returns a list of B [T'_b, D]. Only
    utterances with the same number of frames share a forward pass, so the
    bidirectional RNNs never run over padding.
    """
    encoded = [None] * len(feats)
    for group in _equal_length_groups([f.shape[0] for f in feats]).values():
        x = torch.stack([feats[b] for b in group])
        x = teacher.normalizer(x, torch.ones(len(group), device=x.device))
        out = teacher.model.encode(x)
        for i, b in enumerate(group):
            encoded[b] = out[i]
    return encoded


def greedy_ctc_hypothesis(log_post, blank_index):
    """[T', V] CTC (log-)posteriors -> [H] int64: argmax path, repeats merged,
    blanks dropped (what ``ctc_loss_kd`` derives from a teacher's output)."""
    path = torch.argmax(log_post, dim=-1)
    path = torch.unique_consecutive(path)
    return path[path != blank_index].cpu()


def pad_stack(tensors, value=0.0):
    """List of B [T_b, ...] -> ([B, T_max, ...], lengths [B] int64)."""
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
    out = tensors[0].new_full(
        (len(tensors), int(lengths.max()), *tensors[0].shape[1:]), value
    )
    for b, t in enumerate(tensors):
        out[b, : t.shape[0]] = t
    return out, lengths


def teacher_forced_distributions(teacher, encoded, refs, bos_index, temperature):
    """Teacher-forced decoder distributions of a batch, padding masked out.

    Arguments
    ---------
    encoded : list of B [T'_b, D] encoder outputs.
    refs : list of B [L_b] int64 reference label ids.
    Returns a list of B [L_b + 1, V] float32: softmax(logits / temperature) at
    each of the L_b + 1 positions (the last one predicts eos).

    The decoder is unidirectional over tokens, and its location-aware attention
    is masked by each utterance's true encoder length (relative length
    T'_b / T'_max, rounded back to T'_b), so batching changes no real output.
    """
    enc, enc_lens = pad_stack(encoded)
    rel_lens = enc_lens.to(enc.device).float() / enc.shape[1]
    bos = torch.full((1,), bos_index, dtype=torch.long)
    tokens, _ = pad_stack([torch.cat([bos, r.cpu()]) for r in refs], value=bos_index)
    logits = teacher.model.decoder_logits(enc, rel_lens, tokens.to(enc.device))
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
    return [probs[b, : len(r) + 1] for b, r in enumerate(refs)]


def first_eos_cut(tokens, eos_index):
    """[L+1] argmax tokens -> the part before the first eos (as the original
    recipe's ``batch_filter_seq2seq_output``)."""
    hits = (tokens == eos_index).nonzero()
    return tokens[: int(hits[0])] if len(hits) else tokens


def utterance_pers(refs, hyps):
    """Per-utterance error rates: list of (PER percent capped at 100, edits).

    ``refs`` / ``hyps``: lists of label-id lists. PER = 100 * edits / len(ref)
    (SpeechBrain's edit distance); an empty reference gives 0 or 100.
    """
    ids = list(range(len(refs)))
    details = wer_details_for_batch(ids, refs, hyps)
    out = []
    for ref, hyp, d in zip(refs, hyps, details, strict=True):
        edits = d["num_edits"] if ref else len(hyp)
        per = 100.0 * edits / len(ref) if ref else (100.0 if hyp else 0.0)
        out.append((min(per, PER_CAP), int(edits)))
    return out


def _encode_and_decode_ctc(teacher, feats, temperature):
    """(encoder outputs, greedy CTC hypotheses) of one teacher for a batch:
    lists of B [T'_b, D] and B [H_b] int64."""
    encoded = encode_unpadded(teacher, feats)
    blank = teacher.config["blank_index"]
    ctc_hyps = [
        greedy_ctc_hypothesis(
            torch.log_softmax(teacher.model.ctc_logits(e).float() / temperature, -1),
            blank,
        )
        for e in encoded
    ]
    return encoded, ctc_hyps


def _targets_against(teacher, encoded, ctc_hyps, refs, temperature):
    """One teacher's ``UttTargets`` for a batch, teacher-forced on ``refs``
    (B [L_b] int64) and scored against them."""
    cfg = teacher.config
    att = teacher_forced_distributions(
        teacher, encoded, refs, cfg["bos_index"], temperature
    )
    att_hyps = [first_eos_cut(a.argmax(-1), cfg["eos_index"]) for a in att]
    ref_lists = [r.tolist() for r in refs]
    ctc_pers = utterance_pers(ref_lists, [h.tolist() for h in ctc_hyps])
    att_pers = utterance_pers(ref_lists, [h.tolist() for h in att_hyps])
    return [
        UttTargets(
            ctc_hyp=ctc_hyps[b],
            att_dist=att[b],
            ctc_per=ctc_pers[b][0],
            att_per=att_pers[b][0],
            ctc_edits=ctc_pers[b][1],
            att_edits=att_pers[b][1],
            att_hyp=att_hyps[b],
        )
        for b in range(len(refs))
    ]


def _shared_features(teachers, wavs, wav_lens):
    """Filterbanks per teacher, computed once per distinct feature setting."""
    device = next(teachers[0].model.parameters()).device
    waveforms = crop_waveforms(wavs, wav_lens)
    feats_by_key = {}
    for teacher in teachers:
        if teacher.features_key not in feats_by_key:
            feats_by_key[teacher.features_key] = unpadded_features(
                waveforms, teacher.features, device
            )
    return [feats_by_key[t.features_key] for t in teachers]


@torch.no_grad()
def teacher_targets(teachers, wavs, wav_lens, refs, temperature=1.0):
    """Runs every teacher over one batch; returns targets[b][k] (``UttTargets``).

    Arguments
    ---------
    teachers : list of N Teacher (eval mode, all on one device).
    wavs : [B, S] float32 padded waveforms; wav_lens : [B] relative lengths.
    refs : list of B [L_b] int64 reference label ids (no bos/eos).
    temperature : float, divides logits before every softmax.

    Features are computed once per batch for each distinct feature setting
    and shared by the teachers that use it.
    """
    per_teacher = []
    for teacher, feats in zip(
        teachers, _shared_features(teachers, wavs, wav_lens), strict=True
    ):
        encoded, ctc_hyps = _encode_and_decode_ctc(teacher, feats, temperature)
        per_teacher.append(
            _targets_against(teacher, encoded, ctc_hyps, refs, temperature)
        )
    return [list(row) for row in zip(*per_teacher, strict=True)]


@torch.no_grad()
def consensus_targets(teachers, wavs, wav_lens, temperature=1.0, priority=None):
    """Targets for audio without a reference: (targets[b][k], scores).

    Every teacher's encoder runs once and gives its greedy CTC hypothesis;
    the medoid of the N hypotheses (``mtkd.consensus.consensus``; ties: the
    lowest ``priority``, the teachers' valid PER, then list order) is the
    utterance's pseudo-reference. Every teacher's decoder is then
    teacher-forced on it, from the encoder outputs already computed (no
    second pass), and its PERs are measured against it. ``teachers`` must be
    every teacher of the list: the consensus is theirs.

    ``scores``: {``consensus_teacher`` [B] int32, the teacher whose
    hypothesis is the pseudo-reference; and ``unlabelled_scores``'s
    ``loo_teacher``, ``loo_ctc_per``, ``loo_att_per`` [B, N] and
    ``disagreement`` [B]}, from the same pairwise distances.
    """
    runs = [
        _encode_and_decode_ctc(teacher, feats, temperature)
        for teacher, feats in zip(
            teachers, _shared_features(teachers, wavs, wav_lens), strict=True
        )
    ]
    hyps = [[h[b].tolist() for _, h in runs] for b in range(wavs.shape[0])]
    chosen, distances = zip(*(consensus(h, priority) for h in hyps), strict=True)
    refs = [runs[k][1][b] for b, k in enumerate(chosen)]
    per_teacher = [
        _targets_against(teacher, encoded, ctc_hyps, refs, temperature)
        for teacher, (encoded, ctc_hyps) in zip(teachers, runs, strict=True)
    ]
    targets = [list(row) for row in zip(*per_teacher, strict=True)]
    att_hyps = [[t.att_hyp.tolist() for t in row] for row in targets]
    scores = unlabelled_scores(distances, hyps, att_hyps, chosen, priority)
    scores["consensus_teacher"] = np.asarray(chosen, dtype=np.int32)
    return targets, scores
