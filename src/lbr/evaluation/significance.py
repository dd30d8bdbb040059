"""Is one system better than another on the same queries? A paired bootstrap over per-query scores.

Two retrieval systems scored on the same queries are compared query by query: the mean of the
per-query differences, and a percentile interval for it from resampling the queries with
replacement. The interval covers the sampling of queries only, not the randomness of training
(compare seeds for that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over ``n`` shared queries: its mean, an interval for it, and the query counts."""

    mean: float
    low: float
    high: float
    n: int
    wins: int  # queries where a scores higher
    losses: int  # queries where b scores higher

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """The difference ``a - b`` of two per-query score maps (``{query_id: score}``).

    Raises:
        ValueError: if the maps score different queries, are empty, or the settings are out of range.
    """
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(
            f"the two systems were scored on different queries ({len(only_a)} only in the first, e.g. "
            f"{only_a[:3]}; {len(only_b)} only in the second, e.g. {only_b[:3]})"
        )
    if not a:
        raise ValueError("no queries to compare")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    keys = sorted(a)
    diff = np.array([a[key] - b[key] for key in keys], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [  # in chunks, so thousands of queries need little memory
            diff[rng.integers(0, len(diff), size=(min(1000, samples - start), len(diff)))].mean(axis=1)
            for start in range(0, samples, 1000)
        ]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(
        mean=float(diff.mean()),
        low=float(low),
        high=float(high),
        n=len(diff),
        wins=int((diff > 0).sum()),
        losses=int((diff < 0).sum()),
    )
