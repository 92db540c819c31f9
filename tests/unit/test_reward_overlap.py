"""The reward overlap of the step report (`time/reward_overlap`): the scorer's wall-clock spans and the part
of them the engines of their own generated beside (lwz.rollout.remote.overlap)."""

from __future__ import annotations

import pytest

from lwz.algo.scoring import BatchScorer
from lwz.rollout.remote import overlap


def test_overlap_counts_the_covered_seconds_of_each_span():
    assert overlap([(10.0, 12.0)], [(9.0, 11.5)]) == pytest.approx(1.5)
    assert overlap([(10.0, 12.0), (13.0, 14.0)], [(11.0, 13.5), (13.8, 20.0)]) == pytest.approx(1.0 + 0.5 + 0.2)
    assert overlap([(10.0, 12.0)], [(12.0, 13.0), (1.0, 2.0)]) == 0.0
    assert overlap([], [(0.0, 1.0)]) == 0.0


def test_the_scorer_laps_its_seconds_and_spans():
    class Mix:
        def score(self, texts, samples, lengths):
            return {"length": [1.0] * len(texts)}

        def advantages(self, rewards, group):
            return [0.0] * len(group)

    class Batch:
        texts, samples, response_ids, group, truncated = ["a", "b"], [{}, {}], [[1], [2]], [0, 0], [False, True]

    scorer = BatchScorer(Mix(), mask_truncated=True)
    scorer(Batch())
    scorer(Batch())
    seconds, spans = scorer.lap()
    assert len(spans) == 2 and all(end >= start for start, end in spans) and spans[0][1] <= spans[1][0]
    assert seconds == pytest.approx(sum(end - start for start, end in spans), abs=1e-3)
    assert scorer.lap() == (0.0, [])
