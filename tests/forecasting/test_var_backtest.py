"""VaR backtests and losses on tiny hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest

from recurra.forecasting.var_backtest import christoffersen, kupiec, pinball, qlike


def test_kupiec_is_zero_at_the_nominal_rate_and_rejects_far_from_it():
    hits = np.zeros(100, bool)
    hits[:5] = True
    assert kupiec(hits, 0.05).statistic == pytest.approx(0.0, abs=1e-12)
    assert kupiec(hits, 0.05).pvalue == pytest.approx(1.0)
    # 5 of 100 against 1 %: LR = -2 [95 ln .99 + 5 ln .01 - 95 ln .95 - 5 ln .05]
    expected = -2 * (95 * np.log(.99) + 5 * np.log(.01) - 95 * np.log(.95) - 5 * np.log(.05))
    assert kupiec(hits, 0.01).statistic == pytest.approx(expected)
    assert kupiec(np.zeros(10, bool), 0.01).statistic == pytest.approx(-2 * 10 * np.log(.99))


def test_christoffersen_flags_clustered_violations_only():
    spread = np.zeros(100, bool)
    spread[::20] = True
    clustered = np.zeros(100, bool)
    clustered[40:45] = True
    assert christoffersen(spread).pvalue > 0.3
    assert christoffersen(clustered).pvalue < 0.01


def test_pinball_and_qlike_by_hand():
    assert pinball([1.0, -1.0], [0.0, 0.0], 0.1) == pytest.approx((0.1 * 1 + 0.9 * 1) / 2)
    assert qlike([1.0, 4.0], [1.0, 2.0]) == pytest.approx((0 + 1 + np.log(2) + 2) / 2)
    with pytest.raises(ValueError, match="positive"):
        qlike([1.0], [0.0])
