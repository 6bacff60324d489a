"""The paired bootstrap that every method comparison reports (``ranker.evaluation.compare``)."""

import numpy as np
import pytest

from ranker.evaluation.compare import paired_bootstrap


def test_a_consistent_gain_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 0.3, size=400)
    b = a + 0.02 + rng.normal(0, 0.01, size=400)  # every case a little better
    d = paired_bootstrap(a, b, metric="r_precision")
    assert d.low > 0 and d.excludes_zero
    assert d.low < d.diff < d.high
    assert d.diff == pytest.approx(float(np.mean(b - a)))
    assert d.relative == pytest.approx(d.diff / float(np.mean(a)))


def test_noise_around_the_same_mean_is_not_called_a_difference():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 0.3, size=400)
    b = rng.permutation(a)  # same values, shuffled across cases: no paired gain
    d = paired_bootstrap(a, b)
    assert d.low < 0 < d.high and not d.excludes_zero


def test_pairing_is_what_narrows_the_interval():
    """Cases vary far more than the methods differ: the paired interval is much narrower than the spread."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, size=300)
    d = paired_bootstrap(base, base + 0.01)
    assert d.high - d.low < 1e-9  # the same gain on every case: no doubt at all
    assert d.diff == pytest.approx(0.01)


@pytest.mark.parametrize(("a", "b"), [([], []), ([0.1, 0.2], [0.1])])
def test_bad_inputs_say_what_is_wrong(a, b):
    with pytest.raises(ValueError, match="cases|length"):
        paired_bootstrap(a, b)


def test_the_same_seed_gives_the_same_interval():
    a, b = np.linspace(0, 1, 50), np.linspace(0, 1, 50) ** 2
    assert paired_bootstrap(a, b, random_state=7) == paired_bootstrap(a, b, random_state=7)
