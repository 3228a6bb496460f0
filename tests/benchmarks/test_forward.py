"""The protocol floor's pass counts are the passes the attacks make."""

import functools

import keras
import numpy as np
import pytest

from benchmarks import forward
from keras_lfr import backend, evaluation


class Counting:
    """A model that counts its forward passes and those inside an input gradient."""

    def __init__(self, model):
        self.model = model
        self.forwards = 0
        self.gradients = 0
        self.in_gradient = False

    def __call__(self, x, training=False):
        if not self.in_gradient:
            self.forwards += 1
        return self.model(x, training=training)

    def value_and_gradient(self, value_and_gradient, fn, x):
        self.gradients += 1
        self.in_gradient = True
        try:
            return value_and_gradient(fn, x)
        finally:
            self.in_gradient = False


@pytest.mark.parametrize("name", forward.ATTACKS)
def test_protocol_passes_count_each_attacks_model_calls(monkeypatch, name):
    # Small settings, so that the eager loops run quickly; the verdict is
    # `evaluation.correct_under`'s forward pass, made here as it makes it.
    settings = {"steps": 3, "num_targets": 2, "queries": 4}
    attacks = {
        key: functools.partial(
            attack, **{k: v for k, v in settings.items() if k in attack.keywords}
        )
        for key, attack in evaluation.autoattack_protocol().items()
    }
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    # Four classes (APGD-T's DLR loss needs them); class 0 wins by far
    # everywhere in the box, so no example is ever fooled and no attack stops early.
    inner.layers[-1].bias.assign([100.0, 0.0, 0.0, 0.0])
    model = Counting(inner)
    monkeypatch.setattr(
        backend,
        "value_and_gradient",
        functools.partial(model.value_and_gradient, backend.value_and_gradient),
    )
    x = np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype("float32")
    labels = np.zeros(2, "int32")
    x_adv = attacks[name](model, x, labels)
    model(x_adv)  # the verdict
    assert (model.gradients, model.forwards) == forward.protocol_passes(attacks)[name]


def test_attack_floors_price_each_pass_and_the_float32_verdict():
    passes = forward.protocol_passes(evaluation.autoattack_protocol())
    entering = ["994", "940", "938", "938"]
    gradient, search_forward, verdict = 2.5e-4, 1e-4, 3e-4
    rates = dict.fromkeys(forward.ATTACKS, (gradient, search_forward))
    floors = forward.attack_floors(passes, entering, rates, verdict)
    # By hand: APGD-CE's 101 gradients and its float32 verdict; Square's 5,000
    # searching forwards and its verdict.
    assert floors["apgd_ce"] == pytest.approx(994 * (101 * gradient + verdict))
    assert floors["square"] == pytest.approx(938 * (5000 * search_forward + verdict))
    # At float32's own rates for the search, the verdict is one more pass of them.
    same = forward.attack_floors(
        passes, entering, dict.fromkeys(forward.ATTACKS, (gradient, verdict)), verdict
    )
    for name, (gradients, forwards) in passes.items():
        count = int(entering[forward.ATTACKS.index(name)])
        assert same[name] == pytest.approx(count * (gradients * gradient + forwards * verdict))


def test_each_attack_is_priced_at_the_rates_of_the_precision_it_searches_in():
    passes = forward.protocol_passes(evaluation.autoattack_protocol())
    entering = ["994", "940", "938", "938"]
    bfloat16, float32 = (1e-4, 5e-5), (2e-4, 1e-4)
    rates = {"apgd_ce": bfloat16, "apgd_t": bfloat16, "fab_t": bfloat16, "square": float32}
    floors = forward.attack_floors(passes, entering, rates, float32[1])
    assert floors["square"] == pytest.approx(938 * 5001 * float32[1])
    assert floors["apgd_ce"] == pytest.approx(994 * (101 * bfloat16[0] + float32[1]))
