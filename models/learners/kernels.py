"""Compiled kernels (numba) for exact online learning over hashed ``(idx, val)`` rows.

Every learning kernel walks its batch one example at a time, predicting each example
with the weights left by the one before and then learning it: Vowpal Wabbit's and
river's semantics, whatever the batch size. A batch is only a unit of work, so a batch
that holds the same user or item a thousand times learns exactly as a thousand single
updates would, and cannot overshoot.

Normalisation (Ross, Mineiro & Langford, "Normalized online learning", UAI 2013, as in
Vowpal Wabbit's ``--normalized``): each coordinate ``i`` keeps the largest ``|x_i|`` seen,
``scale[i]``, and learns on ``x_i / scale[i]``, so a year (1997) or a count (10^6) and a
one-hot 1 take steps of the same size. It is unsupervised (the label is never read), and
it is folded into the exported weights (``w_raw[i] = w[i] / scale[i]``), so serving stays
a plain dot product over the raw features. A coordinate never seen has scale 0 and
weight 0.

Compiled with ``cache=True``: the first call in a fresh environment compiles (a few
seconds, once) and writes the machine code to ``__pycache__``; later processes load it
(a fraction of a second). :func:`load` does either for every kernel, once per process;
the learners call it when they are built, so no stream pays it on its first batch.
"""

from __future__ import annotations

import functools
import math
import time

import numba
import numpy as np

_CLIP = 35.0


@numba.njit(cache=True, inline="always")
def _sigmoid(m: float) -> float:
    if m > _CLIP:
        m = _CLIP
    elif m < -_CLIP:
        m = -_CLIP
    return 1.0 / (1.0 + math.exp(-m))


@numba.njit(cache=True, inline="always")
def _ftrl_weight(z: float, n: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    if abs(z) <= l1:
        return 0.0
    s = z - l1 if z > 0.0 else z + l1
    return -s / ((beta + math.sqrt(n)) / alpha + l2)


@numba.njit(cache=True, inline="always")
def _normalised(x: float, s: float) -> float:
    return x / s if s > 0.0 else 0.0


@numba.njit(cache=True, nogil=True)
def normalise(idx: np.ndarray, val: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each row's ``val / scale`` as the learning kernels see it, growing ``scale`` row by row.

    Row ``r`` is divided by ``scale`` after it has taken in rows ``0..r`` (so a row's own
    value counts), exactly as :func:`ftrl_learn` with ``normalize`` does; float32.
    """
    rows, k = idx.shape
    out = np.empty((rows, k), dtype=np.float32)
    for r in range(rows):
        for j in range(k):
            i = idx[r, j]
            x = val[r, j]
            a = abs(x)
            if a > scale[i]:
                scale[i] = a
            out[r, j] = _normalised(x, scale[i])
    return out


@numba.njit(cache=True, nogil=True)
def ftrl_learn(
    idx: np.ndarray,
    val: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    offset: np.ndarray,
    z: np.ndarray,
    n: np.ndarray,
    scale: np.ndarray,
    alpha: float,
    beta: float,
    l1: float,
    l2: float,
    normalize: bool,
    margin: np.ndarray,
) -> np.ndarray:
    """FTRL-Proximal (McMahan et al., KDD 2013), one example at a time.

    ``weight`` is each example's importance (0: predicted, not learned). ``offset`` is a
    margin added to each example's linear margin before the link (0 for plain FTRL;
    the deep part's output when FTRL is the wide part of wide & deep), so the
    coordinates learn the residual the offset leaves. Each example's linear margin
    before it was learned is written to ``margin``. Returns each example's probability
    ``sigmoid(margin + offset)`` before it was learned.
    """
    rows, k = idx.shape
    out = np.empty(rows, dtype=np.float64)
    w = np.empty(k, dtype=np.float64)
    xs = np.empty(k, dtype=np.float64)
    for r in range(rows):
        m = 0.0
        for j in range(k):
            i = idx[r, j]
            x = val[r, j]
            if normalize:
                a = abs(x)
                if a > scale[i]:
                    scale[i] = a
                x = _normalised(x, scale[i])
            xs[j] = x
            if x != 0.0:
                w[j] = _ftrl_weight(z[i], n[i], alpha, beta, l1, l2)
                m += w[j] * x
        margin[r] = m
        p = _sigmoid(m + offset[r])
        out[r] = p
        if weight[r] == 0.0:
            continue
        err = (p - y[r]) * weight[r]
        for j in range(k):
            x = xs[j]
            if x == 0.0:
                continue
            i = idx[r, j]
            g = err * x
            ni = n[i]
            sigma = (math.sqrt(ni + g * g) - math.sqrt(ni)) / alpha
            z[i] += g - sigma * w[j]
            n[i] = ni + g * g
    return out


@numba.njit(cache=True, nogil=True)
def ftrl_margin(
    idx: np.ndarray,
    val: np.ndarray,
    z: np.ndarray,
    n: np.ndarray,
    scale: np.ndarray,
    alpha: float,
    beta: float,
    l1: float,
    l2: float,
) -> np.ndarray:
    """Linear margins of a batch under the current FTRL state (nothing is updated)."""
    rows, k = idx.shape
    out = np.empty(rows, dtype=np.float64)
    for r in range(rows):
        m = 0.0
        for j in range(k):
            i = idx[r, j]
            x = _normalised(val[r, j], scale[i])
            if x != 0.0:
                m += _ftrl_weight(z[i], n[i], alpha, beta, l1, l2) * x
        out[r] = m
    return out


@numba.njit(cache=True, nogil=True)
def ftrl_predict(
    idx: np.ndarray,
    val: np.ndarray,
    z: np.ndarray,
    n: np.ndarray,
    scale: np.ndarray,
    alpha: float,
    beta: float,
    l1: float,
    l2: float,
) -> np.ndarray:
    """Probabilities of a batch under the current FTRL state (nothing is updated)."""
    m = ftrl_margin(idx, val, z, n, scale, alpha, beta, l1, l2)
    out = np.empty(m.shape[0], dtype=np.float64)
    for r in range(m.shape[0]):
        out[r] = _sigmoid(m[r])
    return out


@numba.njit(cache=True, nogil=True)
def ftrl_weights(
    z: np.ndarray,
    n: np.ndarray,
    scale: np.ndarray,
    alpha: float,
    beta: float,
    l1: float,
    l2: float,
) -> np.ndarray:
    """The dense raw-feature weights ``w[i] / scale[i]`` (0 where never seen)."""
    out = np.zeros(z.shape[0], dtype=np.float64)
    for i in range(z.shape[0]):
        if z[i] != 0.0 and scale[i] > 0.0:
            out[i] = _ftrl_weight(z[i], n[i], alpha, beta, l1, l2) / scale[i]
    return out


@numba.njit(cache=True, inline="always")
def _fm_logit(
    idx_row: np.ndarray, xs: np.ndarray, w: np.ndarray, v: np.ndarray, s: np.ndarray
) -> float:
    """The FM logit of one row from its input values ``xs``; leaves ``s[c]`` = the sum of
    ``v[i, c] * x`` over the row's factor slots (slot 0, the bias, is linear only), which
    the factors' gradient needs."""
    f = v.shape[1]
    m = 0.0
    s[:] = 0.0
    sq = 0.0
    for j in range(xs.shape[0]):
        x = xs[j]
        if x == 0.0:
            continue
        i = idx_row[j]
        m += w[i] * x
        if j == 0:
            continue
        for c in range(f):
            t = v[i, c] * x
            s[c] += t
            sq += t * t
    pair = 0.0
    for c in range(f):
        pair += s[c] * s[c]
    return m + 0.5 * (pair - sq)


@numba.njit(cache=True, nogil=True)
def fm_predict(
    idx: np.ndarray,
    val: np.ndarray,
    w: np.ndarray,
    v: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray:
    """FM probabilities of a batch (slot 0, the bias, is in the linear term only)."""
    rows, k = idx.shape
    out = np.empty(rows, dtype=np.float64)
    xs = np.empty(k, dtype=np.float64)
    s = np.empty(v.shape[1], dtype=np.float64)
    for r in range(rows):
        for j in range(k):
            xs[j] = _normalised(val[r, j], scale[idx[r, j]])
        out[r] = _sigmoid(_fm_logit(idx[r], xs, w, v, s))
    return out


@numba.njit(cache=True, nogil=True)
def fm_learn(
    idx: np.ndarray,
    val: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    w: np.ndarray,
    v: np.ndarray,
    acc_w: np.ndarray,
    acc_v: np.ndarray,
    scale: np.ndarray,
    lr: float,
    lr_factors: float,
    l2: float,
    l2_factors: float,
    normalize: bool,
) -> np.ndarray:
    """Factorization machine (Rendle, 2010), one example at a time, by Adagrad.

    ``w`` has one Adagrad accumulator per coordinate, ``v`` one per row (the mean of the
    row's squared gradients, as DLRM's row-wise Adagrad). ``weight`` is each example's
    importance (0: predicted, not learned). Returns each example's probability before
    it was learned.
    """
    rows, k = idx.shape
    f = v.shape[1]
    out = np.empty(rows, dtype=np.float64)
    xs = np.empty(k, dtype=np.float64)
    s = np.empty(f, dtype=np.float64)
    gv = np.empty(f, dtype=np.float64)
    for r in range(rows):
        for j in range(k):
            i = idx[r, j]
            x = val[r, j]
            if normalize:
                a = abs(x)
                if a > scale[i]:
                    scale[i] = a
                x = _normalised(x, scale[i])
            xs[j] = x
        p = _sigmoid(_fm_logit(idx[r], xs, w, v, s))
        out[r] = p
        if weight[r] == 0.0:
            continue
        err = (p - y[r]) * weight[r]
        for j in range(k):
            x = xs[j]
            if x == 0.0:
                continue
            i = idx[r, j]
            g = err * x + l2 * w[i]
            acc_w[i] += g * g
            w[i] -= lr * g / math.sqrt(acc_w[i] + 1e-10)
            if j == 0:
                continue
            g2 = 0.0
            for c in range(f):
                vi = v[i, c]
                gc = err * x * (s[c] - vi * x) + l2_factors * vi
                gv[c] = gc
                g2 += gc * gc
            acc_v[i] += g2 / f
            step = lr_factors / math.sqrt(acc_v[i] + 1e-10)
            for c in range(f):
                v[i, c] -= step * gv[c]
    return out


@numba.njit(cache=True, nogil=True)
def rowwise_adagrad(
    table: np.ndarray, acc: np.ndarray, rows: np.ndarray, grad: np.ndarray, lr: float
) -> None:
    """Row-wise Adagrad step on ``table[rows]`` (DLRM's and FBGEMM's scheme for hashed
    embedding tables: one accumulator per row); a row listed ``c`` times takes one step.

    ``table`` is ``[dim, d]``, ``acc`` ``[dim]``, ``rows`` ``[m]``, ``grad`` ``[m, d]`` (the
    gradient of each listed row). The gradients of a repeated row (the bias, a user in a
    session, a popular item) are averaged, not summed, so a step holding one key a
    hundred times moves it once, as one example would, instead of a hundred times from
    the same stale prediction (which overshoots). The accumulator grows by the mean
    squared (averaged) gradient of the row.
    """
    m, d = grad.shape
    order = np.argsort(rows, kind="mergesort")
    g = np.zeros(d, dtype=np.float64)
    start = 0
    while start < m:
        i = rows[order[start]]
        stop = start
        g[:] = 0.0
        while stop < m and rows[order[stop]] == i:
            for c in range(d):
                g[c] += grad[order[stop], c]
            stop += 1
        count = stop - start
        g2 = 0.0
        for c in range(d):
            g[c] /= count
            g2 += g[c] * g[c]
        acc[i] += g2 / d
        step = lr / math.sqrt(acc[i] + 1e-10)
        for c in range(d):
            table[i, c] -= step * g[c]
        start = stop


@functools.cache
def load() -> float:
    """Compile or load every kernel, with the argument types the learners pass, once per
    process; returns the seconds it took (0 after the first call: cached)."""
    start = time.perf_counter()
    idx = np.zeros((1, 1), dtype=np.int64)
    val = np.ones((1, 1), dtype=np.float32)
    one, state = np.ones(1), np.zeros(1)
    ftrl = (state.copy(), state.copy(), state.copy(), 0.1, 0.1, 0.0, 0.0)
    ftrl_learn(idx, val, one, one, state, *ftrl, True, np.empty(1))
    ftrl_predict(idx, val, *ftrl)
    ftrl_margin(idx, val, *ftrl)
    ftrl_weights(*ftrl)
    normalise(idx, val, state.copy())
    w, v = state.copy(), np.zeros((1, 2), dtype=np.float32)
    fm_learn(
        idx, val, one, one, w, v, state.copy(), state.copy(), state.copy(), 0.1, 0.1, 0.0, 0.0, True
    )
    fm_predict(idx, val, w, v, state.copy())
    rowwise_adagrad(
        np.zeros((1, 2), dtype=np.float32),
        np.zeros(1, dtype=np.float32),
        np.zeros(1, dtype=np.int64),
        np.ones((1, 2), dtype=np.float32),
        0.1,
    )
    return time.perf_counter() - start
