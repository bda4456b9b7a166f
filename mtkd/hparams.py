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

MAX_BASE_DEPTH = 10
# The recipe's own hparams/ folder: where a `base:` not found beside a copied
# file is looked for.
RECIPE_HPARAMS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hparams"
)

# Keys that were renamed: an old name on a command line or in a child file gets
# an error that names the new one.
RENAMED_KEYS = {"speed_perturb": "augment"}


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


def _unknown_key_error(err, hparams_file, base_file, cli):
    """Names the unknown key, where it came from, and the closest known keys."""
    match = re.search(r"Override '([^']+)' not found in: (\[.*\])", str(err))
    if not match:
        return HparamsError(f"{hparams_file}: {err}")
    key, known = match.group(1), ast.literal_eval(match.group(2))
    source = "the command line" if key in cli else hparams_file
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    if key in RENAMED_KEYS:
        hint = f" It was renamed: use `{RENAMED_KEYS[key]}`."
    return HparamsError(
        f"Unknown hyperparameter `{key}` (from {source}): {base_file} has no such "
        f"top-level key.{hint}"
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
    attn_dim cnn_channels cnn_kernelsize annealing_factor
    """.split()
)
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

    Also run on the plain override values before anything is built (building
    the objects creates the output folder)."""
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
                raise HparamsError(f"`{key}` must be {problem}, got {shown} {where}")
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
    child file) stop with an error naming the key instead of being ignored.
    """
    hparams_file, run_opts, overrides_yaml = sb.parse_arguments(argv)
    cluster.preflight(run_opts)  # device and launch options, before any work
    cli = _load_yaml(_last_wins(overrides_yaml or ""), "command-line overrides")
    base_file, text, overrides, sources = resolve_base(hparams_file, cli)
    check_value_types(text, overrides, hparams_file, base_file, cli)
    check_value_ranges(overrides, hparams_file)
    try:
        preview = _resolved_values(text, overrides)
        check_value_ranges(preview, hparams_file)
        check_model_keys(preview, hparams_file)
        for key in OUTPUT_FOLDER_KEYS:  # building the objects creates folders
            if isinstance(preview.get(key), str):
                check_output_folder(preview[key], key)
        hparams = load_hyperpyyaml(io.StringIO(text), _dump_yaml(overrides))
    except KeyError as err:
        raise _unknown_key_error(err, hparams_file, base_file, cli) from err
    except ValueError as err:
        if "PLACEHOLDER" not in str(err):
            raise
        key = str(err).split("'")[1] if "'" in str(err) else str(err)
        raise HparamsError(
            f"{hparams_file}: `{key}` has no value. Give it on the command line, "
            f"e.g. `--{key} /path/to/...`."
        ) from err
    check_value_ranges(hparams, hparams_file)
    check_model_keys(hparams, hparams_file)
    return LoadedHparams(hparams, run_opts, hparams_file, text, overrides, sources)


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
