"""The train log (``train_log.txt`` and its lines on the console).

SpeechBrain's ``FileTrainLogger`` writes a float outside 1-100 in
e-notation, so a valid PER of 235.1 % reads ``valid PER: 2.35e+02`` and
0.5 % reads ``5.00e-01``. ``PercentTrainLogger`` writes every PER as a plain
percentage with two decimals, the figure the results tables print; losses and
the learning rate keep SpeechBrain's form. The names are the recipe's
everywhere: ``PER`` is the attention search's (greedy on valid, the test
search on test), ``CTC_PER`` greedy CTC's.

The first time a run logs a PER above 100 % it adds one line saying what
that means (``ABOVE_100_NOTE``): early in training an attention decoder that
has not learnt to stop emits more phones than the reference holds, and
insertions count as errors.

Importing SpeechBrain's train logger warns "torchvision is not available -
cannot save figures" (it looks for torchvision's image saver when the module
is imported). The recipe saves no figures through it, so this module imports
it once with that one message filtered out; every other message of that
logger passes. ``mtkd`` imports this module first, so the line never opens a
run.
"""

import logging

from speechbrain.utils.distributed import if_main_process

logger = logging.getLogger(__name__)

TORCHVISION_WARNING = "torchvision is not available - cannot save figures"

ABOVE_100_NOTE = (
    "note - a PER above 100 % is no fault; the PER counts insertions, and an "
    "attention search that has not learnt to stop yet emits more phones than "
    "the reference holds (it falls as training goes on)"
)


class _DropMessage(logging.Filter):
    """Drops the log records whose message is ``message``."""

    def __init__(self, message):
        super().__init__()
        self.message = message

    def filter(self, record):
        return record.getMessage() != self.message


def _import_speechbrain_train_logger():
    """``speechbrain.utils.train_logger``, imported without its torchvision
    warning."""
    sb_logger = logging.getLogger("speechbrain.utils.train_logger")
    quiet = _DropMessage(TORCHVISION_WARNING)
    sb_logger.addFilter(quiet)
    try:
        import speechbrain.utils.train_logger as module
    finally:
        sb_logger.removeFilter(quiet)
    return module


FileTrainLogger = _import_speechbrain_train_logger().FileTrainLogger


def is_per_key(key):
    """``PER``, ``CTC_PER``: the error rates among a log line's stats."""
    return key == "PER" or key.endswith("_PER")


class PercentTrainLogger(FileTrainLogger):
    """``FileTrainLogger`` with PERs as plain percentages, and one line on
    the first PER above 100 % (see the module's docstring)."""

    def __init__(self, save_file, precision=2):
        super().__init__(save_file, precision)
        self.explained_above_100 = False

    def _item_to_string(self, key, value, dataset=None):
        if is_per_key(key) and isinstance(value, int | float):
            name = f"{dataset} {key}" if dataset is not None else key
            return f"{name}: {value:.{self.precision}f}"
        return super()._item_to_string(key, value, dataset)

    def log_stats(
        self,
        stats_meta,
        train_stats=None,
        valid_stats=None,
        test_stats=None,
        verbose=True,
    ):
        super().log_stats(stats_meta, train_stats, valid_stats, test_stats, verbose)
        pers = [
            value
            for stats in (valid_stats, test_stats)
            for key, value in (stats or {}).items()
            if is_per_key(key) and isinstance(value, int | float)
        ]
        if self.explained_above_100 or not any(per > 100 for per in pers):
            return
        self.explained_above_100 = True
        if if_main_process():
            with open(self.save_file, "a", encoding="utf-8") as fout:
                print(ABOVE_100_NOTE, file=fout)
            if verbose:
                logger.info(ABOVE_100_NOTE)
