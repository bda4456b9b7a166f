"""The train log (issue 34): PERs as plain percentages, one line on what a
PER above 100 % means, and no torchvision warning at the start of a run."""

import subprocess
import sys

from conftest import REPO, SCRIPT_ENV

from mtkd.train_log import ABOVE_100_NOTE, PercentTrainLogger
from mtkd_tools.results import parse_train_log


def test_the_train_log_writes_pers_as_plain_percentages_and_explains_above_100(
    tmp_path, caplog
):
    path = tmp_path / "train_log.txt"
    logger = PercentTrainLogger(str(path))
    caplog.set_level("INFO")
    meta = {"epoch": 1, "lr": 0.002, "time_s": 12.3}
    train = {"loss": 3.38}
    logger.log_stats(
        meta, train, {"loss": 2.77, "PER": 235.126, "CTC_PER": 0.5}, verbose=True
    )
    logger.log_stats(
        {**meta, "epoch": 2}, train, {"loss": 2.3, "PER": 150.0, "CTC_PER": 40.0}
    )
    logger.log_stats({"Epoch loaded": 2}, test_stats={"PER": 12.0, "CTC_PER": 9.5})
    lines = path.read_text().splitlines()
    assert lines[0] == (
        "epoch: 1, lr: 2.00e-03, time_s: 12.30 - train loss: 3.38 - valid loss: "
        "2.77, valid PER: 235.13, valid CTC_PER: 0.50"
    )
    assert lines[1] == ABOVE_100_NOTE  # once, after the first PER above 100
    assert lines[2].endswith("valid PER: 150.00, valid CTC_PER: 40.00")
    assert lines[3] == "Epoch loaded: 2 - test PER: 12.00, test CTC_PER: 9.50"
    assert len(lines) == 4
    assert caplog.text.count(ABOVE_100_NOTE) == 1
    epochs, test = parse_train_log(str(path))  # the note is no figure
    assert [row["valid_PER"] for row in epochs] == [235.13, 150.0]
    assert [row["valid_CTC_PER"] for row in epochs] == [0.5, 40.0]
    assert test["PER"] == 12.0
    assert "insertions" in ABOVE_100_NOTE and "above 100 %" in ABOVE_100_NOTE


def test_the_torchvision_warning_alone_is_silenced():
    code = (
        "import mtkd, logging\n"
        "import speechbrain.utils.train_logger as t\n"
        "t.logger.warning('another warning of that logger')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=SCRIPT_ENV,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "torchvision" not in proc.stderr
    assert "another warning of that logger" in proc.stderr
