"""Generate reference.json: R ``wilcox.test(x, y, alternative=..., correct=TRUE)`` W and p-values, computed
without scipy (pure Python: itertools, fractions, math.erfc). See README.md for the derivation.

    .venv/bin/python tests/data/judge/make_reference.py   # rewrites reference.json next to this file
"""
from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from fractions import Fraction
from pathlib import Path


def midranks(pooled: list[float]) -> list[float]:
    """R's rank(): ties get the average of the ranks they span."""
    order = sorted(range(len(pooled)), key=lambda i: pooled[i])
    ranks = [0.0] * len(pooled)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and pooled[order[j + 1]] == pooled[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j + 2) / 2
        i = j + 1
    return ranks


def statistic_w(x: list[float], y: list[float]) -> float:
    """R: W = sum(rank(c(x, y))[seq_along(x)]) - n.x * (n.x + 1) / 2."""
    r = midranks(x + y)
    return sum(r[: len(x)]) - len(x) * (len(x) + 1) / 2


def exact_null(m: int, n: int) -> Counter:
    """Null distribution of W by enumerating every placement of the x ranks among 1..m+n (no ties)."""
    counts: Counter = Counter()
    for ranks in itertools.combinations(range(1, m + n + 1), m):
        counts[sum(ranks) - m * (m + 1) // 2] += 1
    return counts


def exact_p(w: float, m: int, n: int, alternative: str) -> float:
    dist = exact_null(m, n)
    total = sum(dist.values())
    w = int(w)

    def le(q: int) -> Fraction:  # pwilcox(q, m, n)
        return Fraction(sum(c for k, c in dist.items() if k <= q), total)

    def ge(q: int) -> Fraction:  # pwilcox(q - 1, m, n, lower.tail = FALSE)
        return Fraction(sum(c for k, c in dist.items() if k >= q), total)

    if alternative == "greater":
        return float(ge(w))
    if alternative == "less":
        return float(le(w))
    p = ge(w) if w > m * n / 2 else le(w)
    return float(min(2 * p, Fraction(1)))


def pnorm(z: float, lower: bool = True) -> float:
    return 0.5 * math.erfc((-z if lower else z) / math.sqrt(2))


def normal_p(x: list[float], y: list[float], alternative: str) -> float:
    """R's normal approximation with tie correction and continuity correction (correct = TRUE)."""
    m, n = len(x), len(y)
    w = statistic_w(x, y)
    ties = Counter(midranks(x + y)).values()
    z = w - m * n / 2
    sigma = math.sqrt((m * n / 12) * ((m + n + 1) - sum(t**3 - t for t in ties) / ((m + n) * (m + n - 1))))
    correction = {"two.sided": math.copysign(0.5, z) if z != 0 else 0.0, "greater": 0.5, "less": -0.5}[alternative]
    z = (z - correction) / sigma
    if alternative == "less":
        return pnorm(z)
    if alternative == "greater":
        return pnorm(z, lower=False)
    return 2 * min(pnorm(z), pnorm(z, lower=False))


def reference(name: str, x: list[float], y: list[float], alternative: str) -> dict:
    m, n = len(x), len(y)
    ties = len(set(x + y)) < m + n
    exact = m < 50 and n < 50 and not ties
    w = statistic_w(x, y)
    p = exact_p(w, m, n, alternative) if exact else normal_p(x, y, alternative)
    return {"name": name, "x": x, "y": y, "alternative": alternative, "method": "exact" if exact else "normal",
            "W": w, "p_value": p}


def lcg(seed: int, count: int, scale: float, offset: float) -> list[float]:
    """Deterministic pseudo-random values (a linear congruential generator, rounded to 0.001)."""
    out, state = [], seed
    for _ in range(count):
        state = (1103515245 * state + 12345) % 2**31
        out.append(round(offset + scale * state / 2**31, 3))
    return out


CASES = [
    # R's ?wilcox.test example (Hollander & Wolfe, depression scores): R prints W = 35, p-value = 0.1272
    ("r_doc_example", [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46], [1.15, 0.88, 0.90, 0.74, 1.21],
     "greater"),
    ("r_doc_example_two_sided", [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46],
     [1.15, 0.88, 0.90, 0.74, 1.21], "two.sided"),
    ("separated_3x3_greater", [4.0, 5.0, 6.0], [1.0, 2.0, 3.0], "greater"),
    ("separated_3x3_less", [4.0, 5.0, 6.0], [1.0, 2.0, 3.0], "less"),
    ("interleaved_5x5_two_sided", [1.0, 3.0, 5.0, 7.0, 9.0], [2.0, 4.0, 6.0, 8.0, 10.0], "two.sided"),
    ("latency_8x7_greater", [212.0, 230.5, 198.2, 251.0, 240.3, 225.1, 260.7, 219.9],
     [201.4, 188.3, 210.2, 195.5, 205.0, 199.1, 190.6], "greater"),
    ("middle_w_two_sided", [2.0, 3.0, 6.0, 7.0], [1.0, 4.0, 5.0, 8.0], "two.sided"),
    ("unequal_2x9_less", [0.5, 0.7], [1.1, 0.2, 3.4, 2.2, 0.9, 1.7, 2.8, 0.1, 4.0], "less"),
    ("ties_6x6_two_sided", [1.0, 2.0, 2.0, 3.0, 3.0, 3.0], [2.0, 3.0, 4.0, 4.0, 5.0, 5.0], "two.sided"),
    ("ties_success_rate_less", [99.5, 99.0, 98.5, 99.0, 98.0, 99.5, 98.5], [99.5, 100.0, 99.5, 100.0, 99.5, 100.0],
     "less"),
    ("ties_heavy_greater", [1.0] * 5 + [2.0] * 5, [1.0] * 8 + [2.0] * 2, "greater"),
    ("large_60x55_greater", lcg(7, 60, 100.0, 205.0), lcg(11, 55, 100.0, 200.0), "greater"),
    ("large_60x55_two_sided", lcg(7, 60, 100.0, 205.0), lcg(11, 55, 100.0, 200.0), "two.sided"),
    ("large_50x50_less", lcg(3, 50, 10.0, 95.0), lcg(5, 50, 10.0, 96.0), "less"),
]


def main() -> None:
    out = [reference(*case) for case in CASES]
    path = Path(__file__).with_name("reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    for r in out:
        print(f"{r['name']:28} {r['alternative']:9} {r['method']:6} W={r['W']:<8g} p={r['p_value']:.6g}")


if __name__ == "__main__":
    main()
