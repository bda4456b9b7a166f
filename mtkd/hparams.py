"""Loading a stage's hyperparameters: HyperPyYAML, command-line overrides, ``base:``.

Every stage script starts with ``load_hparams(sys.argv[1:])``. It behaves like the
usual SpeechBrain preamble (``sb.parse_arguments`` + ``load_hyperpyyaml``) with
one addition that keeps derived configurations short. A YAML file whose
top-level key ``base`` names another file holds values only (``!ref`` allowed,
no new objects):

- its keys override the base file's values (a misspelt key is an error);
- keys under ``add:`` are new keys that the base file does not have.

``hparams/teachers/tea3.yaml`` is then a few lines saying how teacher 3 differs
from ``hparams/teacher.yaml``, and ``train_kd.yaml`` adds the distillation keys
to the same model. Command-line overrides apply on top of everything:
``python train_teacher.py hparams/teachers/tea3.yaml --batch_size 4``.

Each experiment folder receives the *resolved* hyperparameters
(``hyperparams.yaml``): every value the run used, in one file.
"""

import ast
import difflib
import io
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass

import ruamel.yaml
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml, resolve_references

from mtkd import RecipeError, cluster
from mtkd.data import SORTINGS
from mtkd.disk import DiskFullError, disk_full_error, is_disk_full
from mtkd.locks import release_held_locks
from mtkd.model import DECODER_RNNS, ENCODER_RNNS
from mtkd.writable import cannot_write_message, check_output_folder
from timit_prepare import PHONE_SETS
from unlabelled_prepare import TIMIT_SA

MAX_BASE_DEPTH = 10
# The recipe's own hparams/ folder: where a `base:` not found beside a copied
# file is looked for.
RECIPE_HPARAMS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hparams"
)

# Keys that were renamed: an old name on a command line or in a child file gets
# an error that names the new one.
RENAMED_KEYS = {"speed_perturb": "augment"}

# Options named for what they take, beside the original recipe's names (the
# YAML keys, which keep working): `--teacher_list teachers.txt` sets
# `tea_models_dir`, `--pretrain_checkpoint T/model.ckpt` sets `pretrain_st_dir`.
OPTION_ALIASES = {
    "teacher_list": "tea_models_dir",
    "pretrain_checkpoint": "pretrain_st_dir",
}
ALIAS_OF_KEY = {key: alias for alias, key in OPTION_ALIASES.items()}

# Each stage script's YAML, for the message when it is run without one.
STAGE_HPARAMS = {
    "train_teacher.py": "hparams/teachers/tea0.yaml",
    "save_teachers.py": "hparams/save_teachers.yaml",
    "train_kd.py": "hparams/train_kd.yaml",
}

# Inputs that must exist before a stage writes anything: (file or folder,
# what to give instead).
INPUT_PATHS = {
    "data_folder": ("folder", "the TIMIT folder that holds TRAIN and TEST"),
    "tea_models_dir": (
        "file",
        "the teacher list file: one model.ckpt path per line, the last line "
        "train_teacher.py prints (slurm/teacher_list.py writes one from run "
        "folders)",
    ),
    "tea_infer_dir": (
        "path",
        "the teacher store that save_teachers.py wrote (its output folder's store/)",
    ),
}


# Folders a stage writes in: checked before anything is built or written.
OUTPUT_FOLDER_KEYS = ("output_folder", "save_folder", "store_folder")


class HparamsError(RecipeError):
    """A hyperparameter file or override that cannot be used as given."""


@dataclass
class LoadedHparams:
    """What a stage script needs after parsing its command line."""

    hparams: dict
    run_opts: object
    hparams_file: str  # the file named on the command line
    yaml_text: str  # the base HyperPyYAML text with `add:` keys appended
    overrides: dict  # child files' values, then the command line
    sources: list  # every file read, command-line file first
    device: str = "cpu"  # where the stage runs (cluster.preflight's answer)


def _load_yaml(text, where):
    """Parses override YAML, keeping tags such as ``!ref`` as they are written."""
    try:
        return ruamel.yaml.YAML(typ="rt").load(text) or {}
    except ruamel.yaml.YAMLError as err:
        raise HparamsError(f"{where}: not valid YAML ({err})") from err


def _last_wins(text):
    """Keeps the last of repeated top-level keys (``--lr 1 --lr 2`` means 2)."""
    blocks = {}
    for line in text.splitlines():
        if line and not line[0].isspace():
            key = line.split(":", 1)[0]
            blocks.pop(key, None)  # a repeated key moves to the end
            blocks[key] = [line]
        elif blocks:
            blocks[next(reversed(blocks))].append(line)
    return "\n".join(line for block in blocks.values() for line in block)


def _dump_yaml(values):
    """Override values (tags included) back to YAML text."""
    stream = io.StringIO()
    ruamel.yaml.YAML(typ="rt").dump(dict(values), stream)
    return stream.getvalue()


def _merge(into, update):
    """Recursively merges mapping ``update`` into ``into`` (a new dict)."""
    merged = dict(into)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_child_file(text):
    """A child file has a top-level ``base:`` key (and plain values only)."""
    return any(re.match(r"base\s*:", line) for line in text.splitlines())


def _base_path(child, base):
    """Where ``base:`` of the file ``child`` points: relative to the child's
    folder; if no such file, the recipe's own hparams/ folder, so that a copy
    of train_kd.yaml edited elsewhere still finds teacher.yaml."""
    beside = os.path.normpath(os.path.join(os.path.dirname(child), base))
    recipe = os.path.join(RECIPE_HPARAMS, base)
    if (
        not os.path.isfile(beside)
        and not os.path.isabs(base)
        and os.path.isfile(recipe)
    ):
        return recipe
    return beside


def resolve_base(hparams_file, overrides=None):
    """Follows a ``base:`` chain.

    Returns (base file path, its text with every ``add:`` block appended,
    merged overrides: child values then ``overrides``, list of files read).
    """
    chain, added = [], {}
    current = os.path.abspath(hparams_file)
    while True:
        if not os.path.isfile(current):
            if not chain:
                raise HparamsError(f"Hyperparameter file not found: {current}")
            raise HparamsError(
                f"Hyperparameter file not found: {current} (the base of "
                f"{chain[-1][0]}, whose `base:` is taken relative to its own "
                f"folder, then in the recipe's {RECIPE_HPARAMS}). Write the "
                f"base's full path there, e.g. `base: {RECIPE_HPARAMS}/teacher.yaml`."
            )
        with open(current, encoding="utf-8") as f:
            text = f.read()
        if not _is_child_file(text):
            break
        values = _load_yaml(text, current)
        base = values.pop("base")
        added = _merge(values.pop("add", None) or {}, added)
        chain.append((current, values))
        current = _base_path(current, base)
        if len(chain) > MAX_BASE_DEPTH:
            raise HparamsError(f"{hparams_file}: `base:` chain deeper than 10 files")
    clash = sorted(k for k in added if re.search(rf"^{re.escape(k)}\s*:", text, re.M))
    if clash:
        raise HparamsError(
            f"{hparams_file}: `add:` keys {clash} already exist in {current}; "
            "override them as plain keys instead."
        )
    merged = {}
    for _, values in reversed(chain):  # the command-line file wins over its bases
        merged = _merge(merged, values)
    if added:
        text += "\n# Keys added by " + chain[0][0] + "\n" + _dump_yaml(added)
    sources = [path for path, _ in chain] + [current]
    return current, text, _merge(merged, overrides or {}), sources


def _has_no_such_key(hparams_file, base_file):
    """'FILE has no such top-level key', naming the file the user gave (and
    its base file, where the keys of a child file come from)."""
    if os.path.abspath(hparams_file) == os.path.abspath(base_file):
        return f"{hparams_file} has no such top-level key"
    shown = os.path.relpath(base_file)
    if shown.startswith(".."):
        shown = base_file
    return f"neither {hparams_file} nor its base {shown} has such a top-level key"


def _other_name(name):
    """The other name of an option that has two (``OPTION_ALIASES``), or None."""
    return OPTION_ALIASES.get(name) or ALIAS_OF_KEY.get(name)


def unknown_key_error(key, known, hparams_file, base_file, cli):
    """The error for an option or child-file key that the stage's YAML does not
    have: where it came from, the file the user named, the closest known keys
    (an option with two names is suggested by the closer one, the other given
    beside it)."""
    from_cli = key in cli
    dash = "--" if from_cli else ""
    names = sorted(set(known) | set(OPTION_ALIASES))
    close, seen = [], set()
    for name in difflib.get_close_matches(key, names, n=3):
        canonical = OPTION_ALIASES.get(name, name)
        if canonical not in seen:
            seen.add(canonical)
            other = _other_name(name)
            close.append(f"{dash}{name}" + (f" (also {dash}{other})" if other else ""))
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    if key in RENAMED_KEYS:
        hint = f" It was renamed: use `{dash}{RENAMED_KEYS[key]}`."
    what = "option" if from_cli else "hyperparameter"
    source = "the command line" if from_cli else hparams_file
    return HparamsError(
        f"Unknown {what} `{dash}{key}` (from {source}): "
        f"{_has_no_such_key(hparams_file, base_file)}.{hint}"
    )


def _unknown_key_error(err, hparams_file, base_file, cli):
    """``unknown_key_error`` for HyperPyYAML's KeyError on an override."""
    match = re.search(r"Override '([^']+)' not found in: (\[.*\])", str(err))
    if not match:
        return HparamsError(f"{hparams_file}: {err}")
    key, known = match.group(1), ast.literal_eval(match.group(2))
    return unknown_key_error(key, known, hparams_file, base_file, cli)


def check_known_keys(text, overrides, hparams_file, base_file, cli):
    """Every override (command line, child files) must be a top-level key of
    the stage's YAML ``text``: checked before anything else reads the values,
    so a misspelt option is named as such (and not reported as the option it
    was meant to be, left without a value)."""
    known = set(_load_yaml(text, base_file))
    for key in overrides:
        if key not in known:
            raise unknown_key_error(key, known, hparams_file, base_file, cli)


def apply_option_aliases(values, where):
    """``values`` with the new option names (``OPTION_ALIASES``) as the
    original recipe's keys; both names for one key is an error."""
    out = dict(values)
    for alias, key in OPTION_ALIASES.items():
        if alias not in out:
            continue
        if key in out:
            raise HparamsError(
                f"--{alias} and --{key} are one option (--{key} is its original "
                f"name), given twice in {where}: keep --{alias}."
            )
        out[key] = out.pop(alias)
    return out


def check_stage_file_first(argv):
    """Stops with the usage when the stage's YAML is not the first argument:
    ``train_teacher.py --data_folder DIR`` would take DIR for the YAML file."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    example = STAGE_HPARAMS.get(script, "hparams/teachers/tea0.yaml")
    script = script if script in STAGE_HPARAMS else "the stage script"
    usage = (
        f"the first argument is the stage's hyperparameter file, e.g. `python "
        f"{script} {example} --data_folder /path/to/TIMIT`"
    )
    if not argv or argv[0].startswith("-"):
        given = " ".join(argv[:2]) if argv else "nothing"
        raise HparamsError(f"No hyperparameter file given ({given} first): {usage}.")
    if os.path.isdir(argv[0]):
        raise HparamsError(
            f"{argv[0]} is a folder, not a hyperparameter file: {usage}."
        )
    if not os.path.exists(argv[0]):
        raise HparamsError(f"Hyperparameter file not found: {argv[0]} ({usage}).")


def typed_option_names(raw_cli):
    """{key: the option name the user typed for it} for the keys with two
    names; a key not on the command line goes by its new name."""
    return {
        key: alias if alias in raw_cli or key not in raw_cli else key
        for alias, key in OPTION_ALIASES.items()
    }


def check_inputs_exist(values, option_names=None):
    """The inputs of ``INPUT_PATHS`` that are given must exist: checked on the
    resolved values, before anything is built or written (a missing data
    folder would otherwise be found after the output folder was made, a
    missing teacher list after data preparation). A source of unlabelled
    audio that names a path must exist too, and so must a teacher checkpoint
    given for ``pretrain``."""
    names = option_names or ALIAS_OF_KEY
    for key, (kind, what) in INPUT_PATHS.items():
        path = values.get(key)
        if not isinstance(path, str):
            continue  # not given (null), or not this stage's key
        exists = {"folder": os.path.isdir, "file": os.path.isfile}.get(
            kind, os.path.exists
        )(path)
        if not exists:
            option = "--" + names.get(key, key)
            problem = "no such file or folder" if kind == "path" else f"no such {kind}"
            if kind != "path" and os.path.exists(path):
                problem = f"not a {kind}"
            raise HparamsError(
                f"{option} {path}: {problem}. Give {what}. Nothing was written."
            )
    checkpoint = values.get("pretrain_st_dir")
    if values.get("pretrain") is True and isinstance(checkpoint, str):
        if not os.path.exists(checkpoint):
            option = "--" + names.get("pretrain_st_dir", "pretrain_st_dir")
            raise HparamsError(
                f"{option} {checkpoint}: no such file or folder. Give a teacher's "
                "model.ckpt (or its run folder) to start the student's encoder "
                "from, or set --pretrain False to start the student from "
                "scratch. Nothing was written."
            )
    source = values.get("unlabelled")
    if isinstance(source, str) and source != TIMIT_SA and not os.path.exists(source):
        raise HparamsError(
            f"--unlabelled {source}: no such folder or manifest. Give {TIMIT_SA} "
            "(TIMIT's SA sentences), a folder of audio files or a manifest with "
            "wav and duration. Nothing was written."
        )


# Keys of the recipe whose values must be whole numbers (sizes, counts,
# indices); a float there fails deep inside torch or SpeechBrain.
INTEGER_KEYS = frozenset(
    """
    seed number_of_epochs batch_size num_workers valid_beam_size test_beam_size
    sample_rate n_fft n_mels cnn_blocks time_pooling_size rnn_layers rnn_neurons
    dnn_blocks dnn_neurons emb_size dec_neurons attn_dim output_neurons bos_index
    eos_index blank_index phn_set patient teachers_per_part
    teacher_index cnn_channels cnn_kernelsize
    """.split()
)
# Keys that must be greater than 0 (a 0 there divides, or trains nothing;
# for a list, every entry).
POSITIVE_KEYS = frozenset(
    """
    number_of_epochs batch_size lr temperature weight_temperature sample_rate
    n_fft n_mels valid_beam_size test_beam_size output_neurons feats_hop_size
    time_pooling_size rnn_layers rnn_neurons dnn_neurons emb_size dec_neurons
    attn_dim cnn_channels cnn_kernelsize annealing_factor max_grad_norm
    """.split()
)
# What to give instead, for values whose range SpeechBrain's own help gets
# wrong: its --max_grad_norm help says a negative value turns clipping off,
# but SpeechBrain 1.1 clips to the negative norm, which turns every gradient
# round (gradient ascent: the loss rises) and 0 zeroes them.
RANGE_HINTS = {
    "max_grad_norm": (
        "A value of 0 or less does not turn clipping off (SpeechBrain's help "
        "says it does): it reverses or zeroes every gradient. To clip nothing, "
        "give a large value such as 1e9."
    ),
}
# Keys that must be 0 or more (a count that may be none, a threshold).
NON_NEGATIVE_KEYS = frozenset(
    """
    num_workers cnn_blocks dnn_blocks patient improvement_threshold
    teacher_index teachers_per_part
    """.split()
)
# Keys that are fractions: 0 <= value <= 1.
FRACTION_KEYS = frozenset(
    """
    ctc_weight label_smoothing dropout dec_dropout decode_ctc_weight
    annealing_factor
    """.split()
)
# Keys with a closed set of values: those of the code that reads them.
CHOICES = {
    "selection_metric": ("PER", "CTC_PER"),  # the valid stats ASRBrain logs
    "enc_rnn_type": tuple(ENCODER_RNNS),
    "dec_rnn_type": DECODER_RNNS,
    "sorting": SORTINGS,
    "phn_set": tuple(sorted(PHONE_SETS)),
}
RANGE_KEYS = INTEGER_KEYS | POSITIVE_KEYS | NON_NEGATIVE_KEYS | FRACTION_KEYS


def _as_tuple(value):
    """A ``(4, 8)`` override as HyperPyYAML reads it (its ``!tuple`` tag,
    implicit for any value in parentheses), or None for anything else."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    text = value.value if tag == "!tuple" else value
    if not (isinstance(text, str) and re.fullmatch(r"\s*\(.*\)\s*", text)):
        return None
    try:
        parsed = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return ()  # a tuple HyperPyYAML cannot build either: wrong type
    return parsed if isinstance(parsed, tuple) else (parsed,)


def _is_tagged(value):
    """A ``!ref``/``!new:``/... value: its type is known only once resolved."""
    tag = getattr(value, "tag", None)
    return bool(getattr(tag, "value", None)) if tag is not None else False


def _kind(value):
    """What a plain YAML default says its key holds: bool, int, number, a list
    of numbers, or None (anything else: no check)."""
    if _as_tuple(value):
        value = list(_as_tuple(value))
    if _is_tagged(value) or value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list) and value and all(_kind(v) == "number" for v in value):
        return "numbers"
    return None


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


_KIND_WORDS = {
    "bool": "True or False",
    "number": "a number",
    "numbers": "a list of numbers such as [8, 16] or (8, 16)",
}


def check_value_types(text, overrides, hparams_file, base_file, cli):
    """Raises HparamsError for an override of the wrong type, naming the key.

    The expected type is the one of the key's value in the base file ``text``
    (a number, True/False, a list of numbers), plus whole numbers for
    ``INTEGER_KEYS``. Checked before the hyperparameters are built, so a
    ``--batch_size abc`` stops here and not in torch after data preparation.
    """
    defaults = _load_yaml(text, base_file)
    for key, value in overrides.items():
        as_tuple = _as_tuple(value)
        if as_tuple is not None:
            value = list(as_tuple) if as_tuple else getattr(value, "value", value)
        elif _is_tagged(value) or value is None:
            continue  # a reference, or an explicit null: checked once resolved
        kind = _kind(defaults.get(key))
        ok = {
            "bool": lambda v: isinstance(v, bool),
            "number": _is_number,
            "numbers": lambda v: (
                isinstance(v, list | tuple) and bool(v) and all(map(_is_number, v))
            ),
            None: lambda v: True,
        }[kind](value)
        if ok and key in INTEGER_KEYS and not _is_integer(value):
            kind, ok = "integer", False
        if not ok:
            source = "the command line" if key in cli else hparams_file
            want = _KIND_WORDS.get(kind, "a whole number")
            raise HparamsError(
                f"`{key}` must be {want} (as in {base_file}: "
                f"{_plain_text(defaults.get(key))}), got {_plain_text(value)} "
                f"(from {source}). Nothing was written."
            )


def _is_integer(value):
    if isinstance(value, list | tuple):
        return all(map(_is_integer, value))
    return _is_number(value) and float(value).is_integer()


def _plain_text(value):
    return repr(value) if isinstance(value, str) else str(value)


def _range_problem(key, value):
    """What is wrong with number ``value`` of ``key`` (None: nothing)."""
    if key in INTEGER_KEYS and not float(value).is_integer():
        return "a whole number"
    if key in POSITIVE_KEYS and not value > 0:
        return "greater than 0"
    if key in NON_NEGATIVE_KEYS and not value >= 0:
        return "0 or more"
    if key in FRACTION_KEYS and not 0 <= value <= 1:
        return "between 0 and 1"
    return None


def check_value_ranges(hparams, hparams_file):
    """Raises HparamsError for a resolved value out of its range or choices
    (see ``POSITIVE_KEYS``, ``NON_NEGATIVE_KEYS``, ``FRACTION_KEYS``,
    ``INTEGER_KEYS``, ``CHOICES``), naming the key.

    ``load_hparams`` runs it once on the resolved values, before anything is
    built (building the objects creates the output folder), then on the few
    values known only once built."""
    where = f"({hparams_file} and the command line). Nothing was written."
    for key in sorted(RANGE_KEYS):
        value = hparams.get(key)
        if _is_tagged(value) or _as_tuple(value) is not None:
            continue
        values = list(value) if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None or not _is_number(item):
                if item is not None and key in RANGE_KEYS - INTEGER_KEYS:
                    raise HparamsError(
                        f"`{key}` must be a number, got {_plain_text(item)} {where}"
                    )
                continue
            problem = _range_problem(key, item)
            if problem:
                shown = value if isinstance(value, list | tuple) else item
                hint = f" {RANGE_HINTS[key]}" if key in RANGE_HINTS else ""
                raise HparamsError(
                    f"`{key}` must be {problem}, got {shown} {where}{hint}"
                )
    for key, allowed in CHOICES.items():
        value = hparams.get(key)
        if key in hparams and not _is_tagged(value) and value not in allowed:
            raise HparamsError(
                f"`{key}` must be one of {', '.join(map(str, allowed))}, got "
                f"{_plain_text(value)} {where}"
            )


def check_model_keys(hparams, hparams_file):
    """Keys that must agree with each other (resolved values): the label
    indices, the CNN lists and their block count."""
    where = f"({hparams_file} and the command line). Nothing was written."
    indices = {k: hparams.get(k) for k in ("bos_index", "eos_index", "blank_index")}
    outputs = hparams.get("output_neurons")
    if all(_is_number(v) for v in indices.values()) and _is_number(outputs):
        shown = ", ".join(f"{k} {v}" for k, v in indices.items())
        if len(set(indices.values())) != 3:
            raise HparamsError(
                f"bos_index, eos_index and blank_index must be three different "
                f"labels, got {shown} {where}"
            )
        if not all(0 <= v < outputs for v in indices.values()):
            raise HparamsError(
                f"bos_index, eos_index and blank_index must be below "
                f"output_neurons ({outputs}), got {shown} {where}"
            )
    blocks = hparams.get("cnn_blocks")
    for key in ("cnn_channels", "cnn_kernelsize"):
        value = hparams.get(key)
        if _is_number(blocks) and isinstance(value, list | tuple):
            if len(value) < blocks:
                raise HparamsError(
                    f"`{key}` needs one entry per CNN block (cnn_blocks "
                    f"{blocks}), got {list(value)} {where}"
                )


def _resolved_values(text, overrides):
    """The top-level values with references resolved and no object built
    (building the model with sizes that do not fit fails deep in torch);
    ``(4, 8)`` tuples as tuples."""
    resolved = resolve_references(io.StringIO(text), _dump_yaml(overrides))
    values = _load_yaml(resolved.getvalue(), "the resolved hyperparameters")
    return {
        k: tuple(_as_tuple(v)) if _as_tuple(v) is not None else v
        for k, v in values.items()
    }


def load_hparams(argv):
    """Parses ``script.py HPARAMS.yaml [--key value ...]`` the SpeechBrain way.

    Returns a ``LoadedHparams``. Unknown keys (a typo on the command line or in a
    child file) stop with an error naming the key instead of being ignored;
    values out of range and inputs that do not exist stop before anything is
    built or written.
    """
    check_stage_file_first(argv)
    hparams_file, run_opts, overrides_yaml = sb.parse_arguments(argv)
    device = cluster.preflight(run_opts)  # device and launch options, before any work
    # SpeechBrain's run option (the command line's --max_grad_norm); a value
    # in a YAML file is checked with the other keys below.
    check_value_ranges({"max_grad_norm": run_opts["max_grad_norm"]}, hparams_file)
    raw_cli = _load_yaml(_last_wins(overrides_yaml or ""), "command-line overrides")
    cli = apply_option_aliases(raw_cli, "the command line")
    base_file, text, overrides, sources = resolve_base(hparams_file, cli)
    overrides = apply_option_aliases(overrides, hparams_file)
    check_known_keys(text, overrides, hparams_file, base_file, cli)
    check_value_types(text, overrides, hparams_file, base_file, cli)
    try:
        preview = _resolved_values(text, overrides)
        check_value_ranges(preview, hparams_file)
        check_model_keys(preview, hparams_file)
        for key in OUTPUT_FOLDER_KEYS:  # building the objects creates folders
            if isinstance(preview.get(key), str):
                check_output_folder(preview[key], key)
        check_inputs_exist(preview, typed_option_names(raw_cli))
        hparams = load_hyperpyyaml(io.StringIO(text), _dump_yaml(overrides))
    except KeyError as err:
        raise _unknown_key_error(err, hparams_file, base_file, cli) from err
    except ValueError as err:
        if "PLACEHOLDER" not in str(err):
            raise
        key = str(err).split("'")[1] if "'" in str(err) else str(err)
        option = typed_option_names(raw_cli).get(key, key)
        raise HparamsError(
            f"{hparams_file}: `{option}` has no value. Give it on the command line, "
            f"e.g. `--{option} /path/to/...`."
        ) from err
    # Values known only once built (a tagged value in the preview) get their
    # range check now; the others were checked on the preview.
    built_only = {k: hparams.get(k) for k in preview if _is_tagged(preview[k])}
    check_value_ranges(built_only, hparams_file)
    check_model_keys(hparams, hparams_file)
    return LoadedHparams(
        hparams, run_opts, hparams_file, text, overrides, sources, device
    )


def save_resolved_hparams(loaded):
    """Writes ``<output_folder>/hyperparams.yaml``: every value the run used.

    Call after ``sb.create_experiment_directory(output_folder)``. SpeechBrain
    resolves a single file; here values come from a chain of files, so the
    resolved text is written here (main process only).
    """
    folder = loaded.hparams["output_folder"]
    if not sb.utils.distributed.if_main_process():
        return
    resolved = resolve_references(
        io.StringIO(loaded.yaml_text), _dump_yaml(loaded.overrides)
    )
    path = os.path.join(folder, "hyperparams.yaml")
    with open(path + ".tmp", "w", encoding="utf-8") as w:
        w.write("# Every value this run used. Made from (first wins):\n")
        w.writelines(f"#   {source}\n" for source in loaded.sources)
        w.write(f"# command line: {' '.join(sys.argv)}\n")
        w.write(resolved.getvalue())
    os.replace(path + ".tmp", path)


def run_stage(main, argv):
    """Runs a stage's ``main(argv)``; a RecipeError ends it with its message.

    Input errors (a wrong key, a missing file, a corpus that does not fit) are
    the user's to fix: a one-paragraph message serves them better than a
    traceback. Anything else is a bug and keeps its traceback. Under DDP
    every way out goes through ``_leave_distributed``.
    """
    try:
        result = _run_and_explain(main, argv)
    except SystemExit as stop:
        _leave_distributed(stop.code, finished=False)
        raise
    except BaseException:
        release_held_locks()
        if _distributed():
            traceback.print_exc()
            _leave_distributed(1, finished=False)
        raise
    _leave_distributed(0, finished=True)
    return result


def _run_and_explain(main, argv):
    """``main(argv)``, with the user's errors turned into one message."""
    cluster.INTERRUPT.install()
    try:
        result = main(argv)
        cluster.raise_if_interrupted()  # a Ctrl-C lost in a finaliser
        return result
    except KeyboardInterrupt:
        print(
            "ERROR: interrupted (SIGINT / Ctrl-C). Checkpoints and store parts "
            "already written are complete; run the same command to resume.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    except DiskFullError as err:
        _exit_disk_full(err)
    except OSError as err:
        refused = cannot_write_message(err)
        if refused:
            print(f"ERROR: {refused}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            release_held_locks()  # os._exit skips the interpreter's atexit
            os._exit(2)  # as for a full disk: h5py may hold half-closed objects
        if not is_disk_full(err):
            raise
        _exit_disk_full(disk_full_error(err.filename or "a file", "the file"))
    except RecipeError as err:
        print(f"ERROR: {_own_message(err)}", file=sys.stderr)
        cluster.tell_torchrun(_own_message(err))  # its summary ends with it
        raise SystemExit(2) from None


def _distributed():
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _leave_distributed(code, finished):
    """A DDP rank's way out: tear the process group down, then end the
    process at once with ``code``; without DDP, nothing but releasing the
    stage's locks (as with DDP).

    Left to the interpreter's exit, gloo's transport threads (or work
    objects still holding tensors) can outlive the interpreter and abort the
    rank ("terminate called without an active exception", SIGABRT) after a
    finished run, and torchrun then reports the job failed; seen once in 14
    to 40 runs on a busy 2-core machine, with and without an explicit
    ``destroy_process_group``. So the rank flushes its logs and output and
    ends with ``os._exit``, skipping the interpreter's teardown. After a
    finished run (``finished``) the ranks first wait for each other, so that
    none leaves while another still uses the connections; on an error or a
    stop they leave at once (another rank may never arrive).
    """
    import torch.distributed as dist

    release_held_locks()  # the stage's locks (run.lock) end with it
    if not _distributed():
        return
    try:
        if finished:
            dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - leaving anyway; never mask the exit
        logging.getLogger(__name__).warning(
            "could not tear down the process group", exc_info=True
        )
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_disk_full(err):
    """Prints the one message and exits 2 at once: after a failed write HDF5
    (and torch's zip writer) may hold half-closed objects that crash or print
    pages of errors when the interpreter shuts down normally."""
    print(f"ERROR: {err}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    release_held_locks()  # os._exit skips the interpreter's atexit
    os._exit(2)


def _own_message(err):
    """The message of a RecipeError, also when a DataLoader worker raised it
    (torch then puts the worker's whole traceback in front of it)."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    name = type(err).__name__
    marker = f"{name}: "
    message = last.split(marker, 1)[1] if marker in last else last
    return f"{message} (in a data loading worker)"
