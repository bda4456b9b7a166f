"""tools/consensus_quality.py: what each disagreement threshold keeps and
the consensus PER on it, worked out by hand."""

import os
import sys

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import consensus_quality  # noqa: E402


def test_threshold_table_by_hand():
    # Three utterances: disagreement 0, 10, 30 %; the consensus makes 0, 2, 6
    # edits on 10, 10, 20 true phones; half an hour, half an hour, an hour.
    counts = {
        "disagreement": np.array([0.0, 10.0, 30.0]),
        "consensus_edits": np.array([0, 2, 6]),
        "phones": np.array([10.0, 10.0, 20.0]),
        "seconds": np.array([1800.0, 1800.0, 3600.0]),
    }
    rows = consensus_quality.threshold_table(counts, [5, 10, 100, -1])
    assert [r["utterances"] for r in rows] == [1, 2, 3, 0]
    assert [r["utterance_share"] for r in rows] == pytest.approx([1 / 3, 2 / 3, 1, 0])
    assert [r["hours"] for r in rows] == pytest.approx([0.5, 1.0, 2.0, 0.0])
    assert [r["audio_share"] for r in rows] == pytest.approx([0.25, 0.5, 1.0, 0.0])
    # kept edits over kept phones: 0 / 10, 2 / 20, 8 / 40; none kept: None
    assert [r["consensus_per"] for r in rows[:3]] == pytest.approx([0.0, 10.0, 20.0])
    assert rows[3]["consensus_per"] is None
    assert rows[0]["max_disagreement"] == 5.0
    lines = consensus_quality.report(
        "valid", {"teachers": [6.0, 7.5], "consensus": 5.5, "utterances": 3,
                  "thresholds": rows},
    )  # fmt: skip
    assert lines[0] == (
        "valid: consensus PER 5.50 %, teachers' CTC PER 6.00, 7.50 % (3 utterances)"
    )
    assert lines[3].split() == ["10.0", "%", "2", "(", "66.7", "%)", "1.000", "h",
                                "(", "50.0", "%)", "10.00", "%"]  # fmt: skip
