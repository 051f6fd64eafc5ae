"""Ready-made keyed kernels: per-key running z-score and exponentially weighted mean.

Both are ordinary :class:`~laminar_jit.KeyedKernel` operators — read them as
examples of writing your own. Rows are taken per key in arrival order; rows
with a null value are skipped.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from .ops.keyed import KeyedKernel

__all__ = ["ewma", "zscore"]


def _zscore(st, value):
    # Welford's running mean and variance; the score uses the statistics of
    # the key's earlier values, so an outlier does not dilute its own score.
    z = np.nan
    if st.n >= 2:
        sd = np.sqrt(st.m2 / (st.n - 1))
        if sd > 0:
            z = (value - st.mean) / sd
    st.n += 1
    delta = value - st.mean
    st.mean += delta / st.n
    st.m2 += delta * (value - st.mean)
    return z


def zscore(key, value: str, output: str = "z") -> KeyedKernel:
    """Running z-score of ``value`` per key: ``(x - mean) / std`` over the key's earlier values.

    NaN until a key has two earlier values (or while their standard deviation is 0).

    Parameters
    ----------
    key : str or list of str
        Key column(s), e.g. the sensor id.
    value : str
        Numeric column to score.
    output : str
        Name of the float64 output column.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> op = lj.recipes.zscore(key="sensor", value="temp")
    """
    return KeyedKernel(_zscore, key=key, state={"n": np.int64, "mean": np.float64, "m2": np.float64},
                       output={output: pa.float64()}, columns={"value": value})


def _make_ewma(alpha: float):
    def ewma_step(st, value):
        if st.seen:
            st.level += alpha * (value - st.level)
        else:
            st.level = value
            st.seen = True
        return st.level

    return ewma_step


def ewma(key, value: str, alpha: float, output: str = "ewma") -> KeyedKernel:
    """Exponentially weighted moving average of ``value`` per key.

    ``level = level + alpha * (x - level)``, starting at the key's first value
    (Polars' ``ewm_mean(alpha=..., adjust=False)``).

    Parameters
    ----------
    key : str or list of str
        Key column(s).
    value : str
        Numeric column to smooth.
    alpha : float
        Smoothing factor in (0, 1].
    output : str
        Name of the float64 output column.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> op = lj.recipes.ewma(key="sensor", value="temp", alpha=0.1)
    """
    alpha = float(alpha)
    if not (0.0 < alpha <= 1.0) or math.isnan(alpha):
        raise ValueError(f"ewma: alpha must be in (0, 1], got {alpha}")
    return KeyedKernel(_make_ewma(alpha), key=key, state={"level": np.float64, "seen": np.bool_},
                       output={output: pa.float64()}, columns={"value": value})
