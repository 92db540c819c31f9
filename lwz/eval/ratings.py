"""Arena-Write style ratings from pairwise judgments: online Elo, Bradley-Terry MLE, bootstrap CIs.

A judgment is one judge call on (model_a, model_b) with the verdict 'a', 'b' or 'tie'; the two
presentation orders of a pair are two separate judgments. Ties count as half a win for each side.
Bradley-Terry is the leaderboard's rating: it does not depend on the order of the judgments, which
online Elo does. Ratings are on the Elo scale: P(i beats j) = 1 / (1 + 10**((R_j - R_i) / 400)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lwz.errors import LwzError
from lwz.eval import benchmark_file

SCALE, BASE_RATING = 400.0, 1000.0
WINNERS = ("a", "b", "tie")


@dataclass(frozen=True)
class Judgment:
    """One pairwise judge verdict: `winner` is 'a' (model_a), 'b' (model_b) or 'tie'."""

    model_a: str
    model_b: str
    winner: str

    def __post_init__(self) -> None:
        assert self.winner in WINNERS, f"winner must be one of {WINNERS}, got {self.winner!r}"
        assert self.model_a != self.model_b, f"a model cannot be judged against itself ({self.model_a})"


def judgments_from_rows(rows: Sequence[Mapping[str, Any]], where: str | None = None) -> list[Judgment]:
    """Judgments from dicts with `model_a`, `model_b`, `winner`; a bad row raises LwzError naming it."""
    judgments = []
    for n, row in enumerate(rows):
        for key in ("model_a", "model_b"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise LwzError(where, f"{n}.{key}", "must be a model name")
        if row.get("winner") not in WINNERS:
            raise LwzError(where, f"{n}.winner", f"must be one of {', '.join(WINNERS)}, got {row.get('winner')!r}")
        if row["model_a"] == row["model_b"]:
            raise LwzError(where, f"{n}.model_b", "must differ from model_a")
        judgments.append(Judgment(row["model_a"], row["model_b"], row["winner"]))
    return judgments


def _score_a(winner: str) -> float:
    """model_a's result: 1 win, 0 loss, 0.5 tie."""
    return {"a": 1.0, "b": 0.0, "tie": 0.5}[winner]


def online_elo(judgments: Sequence[Judgment], k: float = 4.0, initial: float = BASE_RATING) -> dict[str, float]:
    """Sequential Elo updates in the given order (K=4 as in Chatbot Arena's online Elo); order-dependent."""
    ratings: dict[str, float] = {}
    for j in judgments:
        ra, rb = ratings.setdefault(j.model_a, initial), ratings.setdefault(j.model_b, initial)
        expected_a = 1.0 / (1.0 + 10.0 ** ((rb - ra) / SCALE))
        delta = k * (_score_a(j.winner) - expected_a)
        ratings[j.model_a], ratings[j.model_b] = ra + delta, rb - delta
    return ratings


def models_of(judgments: Sequence[Judgment]) -> list[str]:
    """The models that appear in `judgments`, sorted by name."""
    return sorted({j.model_a for j in judgments} | {j.model_b for j in judgments})


def _win_matrix(judgments: Sequence[Judgment], models: Sequence[str]) -> np.ndarray:
    """W[i, j] = wins of model i over model j, ties counting half to each."""
    position = {m: i for i, m in enumerate(models)}
    wins = np.zeros((len(models), len(models)))
    for j in judgments:
        a, b, s = position[j.model_a], position[j.model_b], _score_a(j.winner)
        wins[a, b] += s
        wins[b, a] += 1.0 - s
    return wins


def _strongly_connected(wins: np.ndarray) -> bool:
    """True when every model beats (or ties) a path to every other: the condition for a finite MLE."""
    def reach(edges: np.ndarray) -> set[int]:
        seen, stack = {0}, [0]
        while stack:
            for nxt in np.flatnonzero(edges[stack.pop()] > 0):
                if int(nxt) not in seen:
                    seen.add(int(nxt))
                    stack.append(int(nxt))
        return seen

    n = wins.shape[0]
    return len(reach(wins)) == n and len(reach(wins.T)) == n


def _fit_strengths(wins: np.ndarray, l2: float, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """Natural-log strengths maximising sum W_ij log sigmoid(t_i - t_j) - l2/2 |t|^2, by damped Newton."""
    n = wins.shape[0]
    games = wins + wins.T
    theta = np.zeros(n)

    def objective(t: np.ndarray) -> float:
        diff = t[:, None] - t[None, :]
        return float(-(wins * np.logaddexp(0.0, -diff)).sum() - 0.5 * l2 * t @ t)

    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = (wins - games * p).sum(axis=1) - l2 * theta
        if np.max(np.abs(grad)) < tol:
            return theta
        weight = games * p * p.T
        hessian = weight - np.diag(weight.sum(axis=1)) - l2 * np.eye(n)
        free = slice(None) if l2 > 0 else slice(1, None)  # without a prior, fix t_0 = 0 (the gauge)
        step = np.zeros(n)
        step[free] = np.linalg.solve(hessian[free, free], -grad[free])
        size, before = 1.0, objective(theta)
        while objective(theta + size * step) < before - 1e-12 and size > 1e-8:
            size /= 2.0
        theta = theta + size * step
    raise AssertionError(f"Bradley-Terry fit did not converge in {max_iter} Newton steps (gradient {grad})")


def bradley_terry(
    judgments: Sequence[Judgment], anchor: str | None = None, anchor_rating: float = BASE_RATING, l2: float = 0.0
) -> dict[str, float]:
    """Bradley-Terry maximum-likelihood ratings on the Elo scale, independent of judgment order.

    Ratings are shifted so their mean is `anchor_rating`, or so the model `anchor` sits at it.
    With `l2 == 0` the MLE must exist: every model needs a win-or-tie path to every other (no model
    unbeaten or winless within a group); otherwise LwzError. `l2 > 0` adds a Gaussian prior on the
    natural-log strengths (centred on the mean) that keeps ratings finite in that case.
    """
    models = models_of(judgments)
    if len(models) < 2:
        raise LwzError(None, "judgments", "need judgments between at least two models")
    if anchor is not None and anchor not in models:
        raise LwzError(None, "anchor", f"model {anchor!r} has no judgments (models: {', '.join(models)})")
    wins = _win_matrix(judgments, models)
    if l2 == 0 and not _strongly_connected(wins):
        raise LwzError(
            None, "judgments",
            "Bradley-Terry ratings are unbounded: some model never loses (or never wins) against the others; "
            "collect more judgments or pass l2 > 0",
        )
    ratings = SCALE / math.log(10.0) * _fit_strengths(wins, l2)
    shift = ratings[models.index(anchor)] if anchor is not None else ratings.mean()
    return {m: float(anchor_rating + r - shift) for m, r in zip(models, ratings)}


def bootstrap_intervals(
    judgments: Sequence[Judgment],
    rounds: int = 1000,
    seed: int = 0,
    anchor: str | None = None,
    l2: float = 0.0,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals (2.5, 97.5) of Bradley-Terry ratings over resampled judgments.

    Each round draws len(judgments) judgments with replacement (numpy `default_rng(seed)`). With
    `l2 == 0` a resample with unbounded ratings raises LwzError; pass l2 > 0 for sparse data.
    """
    assert rounds > 0, "rounds must be positive"
    models = models_of(judgments)
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(models)))
    for r in range(rounds):
        drawn = [judgments[i] for i in rng.integers(0, len(judgments), size=len(judgments))]
        if len(models_of(drawn)) != len(models):
            raise LwzError(None, "judgments", f"bootstrap round {r} drew no judgment of some model; collect more")
        fitted = bradley_terry(drawn, anchor=anchor, l2=l2)
        samples[r] = [fitted[m] for m in models]
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return {m: (float(lo), float(hi)) for m, lo, hi in zip(models, low, high)}


@dataclass(frozen=True)
class LeaderboardRow:
    """One model's Bradley-Terry rating, its 95% bootstrap interval and its record."""

    model: str
    rating: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int
    games: int


def leaderboard(
    judgments: Sequence[Judgment],
    rounds: int = 1000,
    seed: int = 0,
    anchor: str | None = None,
    l2: float = 0.0,
) -> list[LeaderboardRow]:
    """Rows sorted by Bradley-Terry rating (best first) with bootstrap intervals and win/loss/tie counts."""
    ratings = bradley_terry(judgments, anchor=anchor, l2=l2)
    intervals = bootstrap_intervals(judgments, rounds=rounds, seed=seed, anchor=anchor, l2=l2)
    record = {m: [0, 0, 0] for m in ratings}
    for j in judgments:
        if j.winner == "tie":
            record[j.model_a][2] += 1
            record[j.model_b][2] += 1
        else:
            winner, loser = (j.model_a, j.model_b) if j.winner == "a" else (j.model_b, j.model_a)
            record[winner][0] += 1
            record[loser][1] += 1
    rows = [
        LeaderboardRow(m, ratings[m], *intervals[m], *record[m], sum(record[m]))
        for m in ratings
    ]
    return sorted(rows, key=lambda row: (-row.rating, row.model))


def render_leaderboard(rows: Sequence[LeaderboardRow]) -> str:
    """A fixed-width text table of leaderboard rows."""
    header = ("rank", "model", "rating", "95% CI", "wins", "losses", "ties", "games")
    body = [
        (str(n), r.model, f"{r.rating:.0f}", f"{r.ci_low:.0f} to {r.ci_high:.0f}",
         str(r.wins), str(r.losses), str(r.ties), str(r.games))
        for n, r in enumerate(rows, start=1)
    ]
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]
    left = {1}
    lines = [
        "  ".join(cell.ljust(w) if c in left else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths)))
        for line in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pairwise_judge_messages(query: str, response_a: str, response_b: str) -> list[dict[str, str]]:
    """Chat messages asking the judge to compare two responses (shipped `arena_judge_*.txt` prompt).

    Call it for both orders of a pair; each verdict (`critic_parse.parse_verdict`) is one Judgment.
    """
    system = benchmark_file("arena_judge_system.txt").read_text("utf-8").strip()
    template = benchmark_file("arena_judge_prompt.txt").read_text("utf-8")
    user = template.format(query=query, response_a=response_a, response_b=response_b)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
