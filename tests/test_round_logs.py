"""FedProx's run log: a progress line per ~10 % of the rounds instead of Flower's seven lines a
round; warnings and this app's own lines still show."""

from __future__ import annotations

import logging

from server.iterative import progress_rounds, quiet_flower_rounds


def test_about_one_line_per_tenth_of_the_rounds_and_the_last():
    assert progress_rounds(30) == {3, 6, 9, 12, 15, 18, 21, 24, 27, 30}
    assert progress_rounds(50) == {5, 10, 15, 20, 25, 30, 35, 40, 45, 50}
    assert progress_rounds(7) == {1, 2, 3, 4, 5, 6, 7}
    assert progress_rounds(25) == {3, 6, 9, 12, 15, 18, 21, 24, 25}


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_flowers_round_lines_are_hidden_ours_and_warnings_are_not():
    flower = logging.getLogger("flwr")
    keep = _Keep()
    flower.addHandler(keep)
    level = flower.level
    flower.setLevel(logging.INFO)
    try:
        with quiet_flower_rounds():
            flower.info("[ROUND 1/30]")
            flower.warning("aggregate_train: Received 9 results and 1 failures")
            logging.getLogger("flwr.mixupfl.server").info("round 3/30: test accuracy 85.00 %")
        flower.info("after the rounds")
    finally:
        flower.removeHandler(keep)
        flower.setLevel(level)
    assert [r.getMessage() for r in keep.records] == [
        "aggregate_train: Received 9 results and 1 failures", "round 3/30: test accuracy 85.00 %", "after the rounds"]
    assert flower.level == level
