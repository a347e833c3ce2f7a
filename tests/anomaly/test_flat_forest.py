"""The isolation forest's vectorised scorer equals scikit-learn's ``score_samples``."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from recurra.anomaly.baselines import FlatForest


@pytest.mark.parametrize(("max_features", "max_samples", "n_rows"),
                         [(1.0, "auto", 300), (0.5, 64, 300), (1.0, "auto", 2)])
def test_flat_forest_equals_score_samples(max_features, max_samples, n_rows):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(n_rows, 6))
    forest = IsolationForest(n_estimators=25, max_features=max_features,
                             max_samples=max_samples, random_state=0).fit(train)
    rows = np.vstack([rng.normal(size=(40, 6)) * 2.0, train[:5]])
    flat = FlatForest(forest)
    np.testing.assert_array_equal(flat.score(rows), -forest.score_samples(rows))
    np.testing.assert_array_equal(flat.score(rows[3:4]), -forest.score_samples(rows[3:4]))
    assert flat.score(np.zeros((0, 6))).shape == (0,)
