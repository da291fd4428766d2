"""The learner's throughput metrics (`charts/updates_per_s`, `charts/samples_per_s`) on a fake clock."""

from __future__ import annotations

import pytest

from learner.metrics import Throughput


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rates_count_from_the_first_update_and_reset_at_each_log() -> None:
    clock = Clock()
    throughput = Throughput(clock)
    clock.now += 50.0  # start-up and waiting for min_replay: not counted
    throughput.start()
    for _ in range(4):
        clock.now += 0.5
        throughput.count(32)
    assert throughput.rates() == pytest.approx({"charts/updates_per_s": 2.0, "charts/samples_per_s": 64.0})
    clock.now += 1.0  # a poll with no update still counts as learner time
    throughput.count(8)
    assert throughput.rates() == pytest.approx({"charts/updates_per_s": 1.0, "charts/samples_per_s": 8.0})


def test_rates_before_any_update_are_zero() -> None:
    assert Throughput(Clock()).rates() == {"charts/updates_per_s": 0.0, "charts/samples_per_s": 0.0}
