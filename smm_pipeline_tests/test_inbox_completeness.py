"""When the sensors take a dropped file as complete: moved in long after it was written, or
unchanged since their previous look. A file touched recently is never read at first sight."""

from __future__ import annotations

import os
import time
from pathlib import Path

from smm_pipeline.operations.inbox import SETTLE_SECONDS, is_complete, observe


def _observed(path: Path, age_seconds: float):
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    (obs,) = observe(path.parent)
    return obs


def test_a_recently_written_file_waits_for_a_second_identical_look(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("service,link,quantity\n1,https://x.com/a,100\n", encoding="utf-8")
    first = _observed(path, SETTLE_SECONDS / 3)  # a writer that paused for ten seconds
    assert not is_complete(first, None)
    assert is_complete(first, first.stamp)  # unchanged at the next look
    with path.open("a", encoding="utf-8") as handle:
        handle.write("1,https://x.com/b,100\n")
    grown = _observed(path, 0)
    assert not is_complete(grown, first.stamp)


def test_a_file_moved_in_long_after_it_was_written_is_complete_at_first_sight(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("service,link,quantity\n", encoding="utf-8")
    assert SETTLE_SECONDS == 30
    assert is_complete(_observed(path, SETTLE_SECONDS + 1), None)
    assert not is_complete(_observed(path, SETTLE_SECONDS - 1), None)
