"""`trainers.studies.sweep`: sweep points."""

import pytest

from trainers.studies import sweep


def test_sweep_points_scale_the_defaults():
    point = sweep.hyperparameters("adr", ("local_weight", "global_weight"), 0.1, relative=True)
    assert point == pytest.approx({"local_weight": 0.001, "global_weight": 0.0005})
    assert sweep.hyperparameters("lfr", ("lam",), 0.05) == {"lam": 0.05}
    with pytest.raises(ValueError, match="argument `params`"):
        sweep.hyperparameters("lfr", ("beta",), 1.0)
