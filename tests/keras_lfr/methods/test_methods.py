"""The baselines and AWP against independent computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, learnable_data, tiny_model

import keras_lfr
from keras_lfr import ops
from keras_lfr.methods import LLR, TRADES
from keras_lfr.methods import awp as awp_module


def softmax(logits):
    logits = logits.astype("float64")
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce_numpy(logits, y):
    return -np.log(softmax(logits)[np.arange(len(y)), y])


def test_trades_loss_matches_numpy(tiny, batch):
    x, y = batch
    x_adv = np.random.default_rng(1).uniform(size=x.shape).astype("float32")
    _, total, terms = TRADES(beta=2.0).loss(tiny, x, tf.constant(y), tf.constant(x_adv))
    p, q = softmax(tiny(x).numpy()), softmax(tiny(x_adv).numpy())
    kl = (p * (np.log(p) - np.log(q))).sum(axis=1).mean()
    ce = ce_numpy(tiny(x).numpy(), y).mean()
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
    np.testing.assert_allclose(total, ce + 2.0 * kl, rtol=1e-5)


def test_trades_inner_max_raises_kl_inside_the_ball(tiny, batch):
    x, y = batch
    method = TRADES(epsilon=0.1, step_size=0.02, steps=5)
    x_adv = method.perturb(tiny, tf.constant(x), tf.constant(y), ops.as_seed(0)).numpy()
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
    _, _, start_terms = method.loss(tiny, x, y, np.clip(x + 0.001, 0, 1))
    _, _, terms = method.loss(tiny, x, y, x_adv)
    assert terms["kl"] > 10 * start_terms["kl"]


def test_llr_loss_is_per_example(tiny, batch):
    x, y = batch
    rng = np.random.default_rng(1)
    delta = rng.uniform(-0.1, 0.1, size=x.shape).astype("float32")
    _, total, terms = LLR(lam=4.0, mu=3.0).loss(tiny, x, tf.constant(y), tf.constant(x + delta))
    gaps, alignments = [], []
    for i in range(len(x)):  # one example at a time: nothing can mix examples
        xi = tf.constant(x[i : i + 1])
        with tf.GradientTape() as tape:
            tape.watch(xi)
            loss = ops.cross_entropy(y[i : i + 1], tiny(xi))[0]
        grad = tape.gradient(loss, xi).numpy()
        shifted = ops.cross_entropy(y[i : i + 1], tiny(x[i : i + 1] + delta[i : i + 1]))[0]
        directional = float((delta[i] * grad[0]).sum())
        gaps.append(abs(float(shifted) - float(loss) - directional))
        alignments.append(abs(directional))
    ce = ce_numpy(tiny(x).numpy(), y).mean()
    np.testing.assert_allclose(terms["linearity_gap"], np.mean(gaps), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(terms["grad_alignment"], np.mean(alignments), rtol=1e-4)
    np.testing.assert_allclose(total, ce + 4 * np.mean(gaps) + 3 * np.mean(alignments), rtol=1e-4)


def test_llr_inner_max_raises_the_gap(tiny, batch):
    x, y = batch
    method = LLR(epsilon=0.2, step_size=0.05, steps=5)
    x_adv = method.perturb(tiny, tf.constant(x), tf.constant(y), ops.as_seed(0))
    assert np.abs(x_adv.numpy() - x).max() <= 0.2 + 1e-6
    start = ops.random_start(tf.constant(x), "uniform", 0.2, ops.as_seed(0), 0.0, 1.0)
    _, _, before = method.loss(tiny, x, y, start)
    _, _, after = method.loss(tiny, x, y, x_adv)
    assert after["linearity_gap"] > before["linearity_gap"]


@pytest.mark.parametrize(
    "method, hyper",
    [
        ("standard", {}),
        ("pgd_at", {"epsilon": 0.05, "step_size": 0.02, "steps": 2}),
        ("trades", {"epsilon": 0.05, "step_size": 0.02, "steps": 2}),
        ("llr", {"epsilon": 0.05, "step_size": 0.02, "steps": 2}),
        ("lfr", {"epsilon": 0.05, "step_size": 0.02, "steps": 2, "awp_gamma": 0.005}),
    ],
)
def test_each_method_lowers_its_loss(method, hyper):
    x, y = learnable_data()
    model = keras_lfr.wrap(tiny_model(), method=method, **hyper)
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=5, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert set(model.method.terms) <= set(history)


def awp_model(gamma, warmup_steps=0, lr=0.1):
    model = keras_lfr.wrap(
        tiny_model(),
        method="trades",
        epsilon=0.1,
        steps=2,
        awp_gamma=gamma,
        awp_warmup_steps=warmup_steps,
    )
    model.compile(optimizer=keras.optimizers.SGD(lr))
    return model


def test_awp_gradients_are_taken_at_the_perturbed_weights(batch):
    x, y = batch
    model = awp_model(0.01)
    x, labels, seed = tf.constant(x), tf.constant(y), ops.as_seed(0)
    grads, _, loss, _ = model.compute_gradients(x, labels, None, seed)
    # Independently: perturb a copy by v = γ‖w‖∇/‖∇‖ (kernels only), then differentiate.
    x_adv = model.method.perturb(model.inner_model, x, labels, seed)
    copy = tiny_model()
    with tf.GradientTape() as tape:
        _, proxy_loss, _ = model.method.base.loss(copy, x, labels, x_adv)
    proxy = tape.gradient(proxy_loss, copy.trainable_variables)
    for w, g in zip(copy.trainable_variables, proxy, strict=True):
        if len(w.shape) > 1:
            w.assign(w + 0.01 * np.linalg.norm(w.numpy()) * g / np.linalg.norm(g.numpy()))
    with tf.GradientTape() as tape:
        _, expected_loss, _ = model.method.base.loss(copy, x, labels, x_adv)
    expected = tape.gradient(expected_loss, copy.trainable_variables)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    # ... and differ from the unperturbed gradients.
    _, _, plain_loss, _ = awp_model(0.0).compute_gradients(x, labels, None, seed)
    assert abs(float(plain_loss) - float(loss)) > 1e-6


def test_awp_leaves_weights_exactly_unperturbed_apart_from_the_update(batch):
    x, y = batch
    frozen = awp_model(0.05, lr=0.0)
    before = frozen.get_weights()
    frozen.train_on_batch(x, y)
    for a, b in zip(before, frozen.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    model = awp_model(0.05, lr=0.1)
    before = model.get_weights()
    grads, *_ = model.compute_gradients(tf.constant(x), tf.constant(y), None, model.step_seed())
    model.train_on_batch(x, y)
    for w0, g, w1 in zip(before, grads, model.get_weights(), strict=True):
        np.testing.assert_allclose(w1, w0 - 0.1 * g.numpy(), rtol=1e-6, atol=1e-7)


def test_awp_warmup_trains_like_the_plain_method_first():
    x, y = learnable_data(n=64)
    histories = []
    for gamma, warmup_steps in ((0.0, 0), (0.05, 2), (0.05, 0)):  # 2 steps per epoch
        model = awp_model(gamma, warmup_steps)
        histories.append(model.fit(x, y, batch_size=32, epochs=2, verbose=0).history["loss"])
    plain, warm, immediate = histories
    assert plain[0] == warm[0]  # epoch 0 is warm-up: identical
    assert plain[1] != warm[1]  # AWP on from epoch 1
    assert plain[0] != immediate[0]


def test_awp_warmup_skips_the_proxy_pass(monkeypatch):
    calls = []
    original = awp_module.awp_perturbation
    monkeypatch.setattr(
        awp_module, "awp_perturbation", lambda *args: calls.append(1) or original(*args)
    )
    x, y = learnable_data(n=64)
    model = awp_model(0.05, warmup_steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)  # 4 steps, 2 of warm-up
    assert len(calls) == 2


def test_awp_logs_accuracy_at_the_real_weights():
    x, y = learnable_data(n=64)
    model = keras_lfr.wrap(tiny_model(), method="standard", awp_gamma=5.0)  # a huge perturbation
    model.compile(optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy"])  # weights stay
    logged = model.fit(x, y, batch_size=64, epochs=1, verbose=0).history["accuracy"][0]
    real = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))
    assert logged == pytest.approx(real)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"method": "trades", "beta": -1.0}, "beta"),
        ({"method": "llr", "mu": -3.0}, "mu"),
        ({"method": "pgd_at", "clean_weight": 1.5}, "clean_weight"),
        ({"awp_gamma": -0.01}, "awp_gamma"),
        ({"method": "awp", "warmup_steps": -1}, "warmup_steps"),
        ({"awp_warmup_steps": -1}, "awp_warmup_steps"),
        ({"method": "awp", "base": "awp"}, "base"),
    ],
)
def test_bad_method_hyperparameters(tiny, kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        keras_lfr.wrap(tiny, **kwargs)


def test_adr_compactness_terms_match_numpy():
    from keras_lfr.methods.adr import compactness_terms

    rng = np.random.default_rng(0)
    z, z_adv = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    y = np.array([0, 1, 0, 2, 1, 0])
    local, global_ = compactness_terms(
        tf.constant(z, tf.float32), tf.constant(z_adv, tf.float32), tf.constant(y)
    )
    np.testing.assert_allclose(local, np.abs(z - z_adv).mean(axis=1), rtol=1e-5)
    pairs = [
        np.abs(z_adv[i] - z[j]).mean()
        for i in range(6)
        for j in range(6)
        if i != j and y[i] == y[j]
    ]
    np.testing.assert_allclose(global_, np.mean(pairs), rtol=1e-5)
    _, none = compactness_terms(z[:3], z_adv[:3], tf.constant([0, 1, 2]))
    assert float(none) == 0.0


def test_adr_layer_must_exist(batch):
    x, y = batch
    model = keras_lfr.wrap(tiny_model(), method="adr", layer="nope", steps=1)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="argument `layer`. Received: layer='nope'"):
        model.train_on_batch(x, y)


def lsp_numpy(u, z, temperature):
    def affinities(points):
        points = points.reshape(len(points), -1).astype("float64")
        d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
        off = d2[~np.eye(len(points), dtype=bool)]
        logits = -d2 / (temperature * off.mean())
        np.fill_diagonal(logits, -np.inf)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = affinities(u), affinities(z)
    return np.mean(np.sum(np.where(p > 0, p * (np.log(p + 1e-12) - np.log(q + 1e-12)), 0), axis=1))


def test_lsp_structure_loss_matches_numpy_and_invariants():
    from keras_lfr.methods.lsp import structure_loss

    rng = np.random.default_rng(0)
    u = rng.uniform(size=(9, 4, 4, 1)).astype("float32")
    z = rng.normal(size=(9, 3)).astype("float32")
    np.testing.assert_allclose(structure_loss(u, z, 0.5), lsp_numpy(u, z, 0.5), rtol=1e-4)
    flat = u.reshape(9, -1)
    assert abs(float(structure_loss(u, flat, 0.5))) < 1e-5  # identity embedding
    np.testing.assert_allclose(  # scale-free
        structure_loss(u, 10 * z, 0.5), structure_loss(u, z, 0.5), rtol=1e-4
    )
    # ... in its gradient too: for a scale-invariant f, ⟨∇f(z), z⟩ = 0, so
    # training cannot lower the term by rescaling the features.
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = structure_loss(u, z, 0.5)
    grad = tape.gradient(value, z).numpy()
    assert np.linalg.norm(grad) > 1e-3
    assert abs(np.sum(grad * z.numpy())) < 1e-5 * np.linalg.norm(grad) * np.linalg.norm(z)


@pytest.mark.parametrize(
    "method, hyper",
    [
        ("adr", {"epsilon": 0.05, "step_size": 0.02, "steps": 2}),
        ("adr", {"base": "trades", "epsilon": 0.05, "step_size": 0.02, "steps": 2, "beta": 2.0}),
        ("lsp", {"epsilon": 0.05, "step_size": 0.02, "steps": 2}),
    ],
)
def test_feature_space_methods_lower_their_loss(method, hyper):
    x, y = learnable_data()
    model = keras_lfr.wrap(tiny_model(), method=method, **hyper)
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=5, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert set(model.method.terms) <= set(history)


def test_composite_methods_validate_their_base(tiny):
    with pytest.raises(ValueError, match="argument `base`. Received: base='lfr'"):
        keras_lfr.wrap(tiny, method="adr", base="lfr")
    with pytest.raises(ValueError, match=r"Unknown hyperparameter\(s\) \['beta'\]"):
        keras_lfr.wrap(tiny, method="lsp", base="pgd_at", beta=1.0)


ALL_METHODS = {
    "standard": {},
    "pgd_at": {"epsilon": 0.1, "steps": 2, "clean_weight": 0.5},
    "trades": {"epsilon": 0.1, "steps": 2, "beta": 3.0},
    "llr": {"epsilon": 0.1, "steps": 2, "lam": 2.0, "mu": 1.0},
    "lfr": {"epsilon": 0.1, "steps": 2, "lam": 0.1},
    "adr": {"base": "trades", "epsilon": 0.1, "steps": 2, "global_weight": 0.2},
    "lsp": {"epsilon": 0.1, "steps": 2, "weight": 0.3},
    "awp": {"base": "lfr", "gamma": 0.01, "warmup_steps": 3, "epsilon": 0.1, "steps": 2},
}


def test_every_registered_method_is_covered():
    assert sorted(ALL_METHODS) == keras_lfr.available_methods()


@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_every_method_survives_keras_save_and_load(tmp_path, batch, method):
    x, y = batch
    # Every method with AWP on top (`awp` itself: AWP on LFR).
    awp = {} if method == "awp" else {"awp_gamma": 0.01, "awp_warmup_steps": 3}
    model = keras_lfr.wrap(tiny_model(), method=method, **awp, **ALL_METHODS[method])
    model.compile(optimizer="sgd")
    model.train_on_batch(x, y)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.method) is type(model.method)
    assert loaded.method.get_config() == model.method.get_config()
    assert type(loaded.method.base) is type(model.method.base)
    assert (loaded.method.gamma, loaded.method.warmup_steps) == (0.01, 3)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_allclose(
        loaded.train_on_batch(x, y, return_dict=True)["loss"],
        model.train_on_batch(x, y, return_dict=True)["loss"],
        rtol=1e-5,
    )


@pytest.mark.parametrize("method", ["trades", "llr", "adr", "lsp"])
def test_methods_compile_with_xla(batch, method):
    x, y = batch
    logs = []
    for jit in (False, True):
        model = keras_lfr.wrap(tiny_model(), method=method, **ALL_METHODS[method])
        model.compile(optimizer="sgd", jit_compile=jit)
        logs.append(model.train_on_batch(x, y, return_dict=True))
    for key in logs[0]:
        np.testing.assert_allclose(logs[1][key], logs[0][key], rtol=1e-4, atol=1e-6)


def test_awp_warmup_branch_compiles_with_xla(batch):
    # LFR's double backprop inside both branches of the warm-up `tf.cond`.
    x, y = batch
    losses = []
    for jit in (False, True):
        model = keras_lfr.wrap(
            tiny_model(), method="lfr", steps=2, awp_gamma=0.05, awp_warmup_steps=1
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        losses.append([model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(2)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


def test_pgd_at_and_standard_losses_match_numpy(tiny, batch):
    from keras_lfr.methods import PGDAT, Standard

    x, y = batch
    x_adv = np.random.default_rng(2).uniform(size=x.shape).astype("float32")
    clean, adv = ce_numpy(tiny(x).numpy(), y).mean(), ce_numpy(tiny(x_adv).numpy(), y).mean()
    _, total, terms = PGDAT(clean_weight=0.25).loss(tiny, x, tf.constant(y), tf.constant(x_adv))
    np.testing.assert_allclose(terms["adv_ce"], adv, rtol=1e-5)
    np.testing.assert_allclose(total, 0.75 * adv + 0.25 * clean, rtol=1e-5)
    _, total, _ = Standard().loss(tiny, x, tf.constant(y), None)
    np.testing.assert_allclose(total, clean, rtol=1e-5)


@pytest.fixture(scope="module")
def mnist_slice():
    train = keras_lfr.data.load("mnist", "train", batch_size=32, num_examples=512)
    return train


@pytest.mark.parametrize(
    "method",
    [m for m in keras_lfr.available_methods()],
)
def test_every_method_trains_at_its_default_weights(mnist_slice, method):
    # The defaults of each method's weights (λ, β, μ, the ADR and LSP weights)
    # must not drive MNIST at ε = 0.3 to the constant classifier (clean CE at
    # ln 10). Only K (2 steps of 0.15) and the data (48 batches of 32 from 512
    # images) are cut to keep the test cheap; the optimizer and the ε ramp are
    # the fast recipe's.
    keras.utils.set_random_seed(0)
    cnn = keras_lfr.models.small_cnn(dropout=0.0)
    hyper = {} if method == "standard" else {"steps": 2, "step_size": 0.15}
    model = keras_lfr.wrap(cnn, method=method, epsilon_warmup=16, **hyper)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(mnist_slice, epochs=3, verbose=0)
    assert history.history["clean_ce"][-1] < np.log(10) - 0.3, history.history["clean_ce"]


def test_trades_starts_unclipped_like_the_official_code(tiny):
    # Pixels at 0 and 1, where clipping the start changes it.
    x = np.random.default_rng(2).choice([0.0, 1.0, 0.5], size=(8, 8, 8, 1)).astype("float32")
    y = tf.zeros([8], tf.int32)
    seed = ops.as_seed(5)
    epsilon, step = 0.1, 0.02
    # Official trades_loss: x_adv = x + 0.001·N(0, 1) (no clamp), then per step
    # x_adv = clamp(min(max(x_adv + step·sign(∇KL), x − ε), x + ε), 0, 1).
    start = x + 0.001 * ops.normal(tf.shape(x), seed).numpy()
    assert start.min() < 0.0 and start.max() > 1.0
    clean = tiny(x, training=False)
    with tf.GradientTape() as tape:
        x_var = tf.constant(start)
        tape.watch(x_var)
        kl = tf.reduce_sum(ops.kl_divergence(clean, tiny(x_var)))
    stepped = start + step * np.sign(tape.gradient(kl, x_var))
    expected = np.clip(np.clip(stepped, x - epsilon, x + epsilon), 0, 1)
    method = TRADES(epsilon=epsilon, step_size=step, steps=1)
    np.testing.assert_allclose(method.perturb(tiny, x, y, seed), expected, atol=1e-7)
    # The clipped start (the LFR authors') stays available, and it differs.
    clipped = TRADES(epsilon=epsilon, step_size=step, steps=1, random_start="normal")
    assert np.abs(clipped.perturb(tiny, x, y, seed).numpy() - expected).max() > 1e-4


@pytest.mark.parametrize("method", keras_lfr.available_methods())
def test_every_logged_term_is_described_by_its_method(method):
    instance = keras_lfr.methods.get_method(method)
    for term in instance.terms:
        assert instance.describe(term) != "a logged term", (method, term)
    assert instance.describe("loss") == "the total objective"


def test_a_user_method_in_a_few_lines(batch):
    # The example of docs/methods.md, "Writing a method", run as written there.
    text = (REPO / "docs" / "methods.md").read_text()
    source = text.split("**Writing a method.**")[1].split("```python\n")[1].split("```")[0]
    namespace = {}
    try:
        exec(compile(source, "docs/methods.md", "exec"), namespace)
        x, y = batch
        model = keras_lfr.wrap(tiny_model(), method="margin_at", epsilon=0.1, steps=2)
        model.compile(optimizer="sgd")
        logs = model.train_on_batch(x, y, return_dict=True)
        assert set(logs) == {"loss", "adv_ce"} and np.isfinite(logs["loss"])
        x, y = tf.constant(x), tf.constant(y)
        x_adv = model.method.perturb(model.inner_model, x, y, ops.as_seed(0))
        assert np.abs(x_adv.numpy() - x.numpy()).max() <= 0.1 + 1e-6
        # The ascent lowers the margin of the true class.
        before = ops.margin(model.inner_model(x, training=False), y)
        after = ops.margin(model.inner_model(x_adv, training=False), y)
        assert float(tf.reduce_mean(after)) < float(tf.reduce_mean(before))
    finally:
        keras_lfr.methods.base._REGISTRY.pop("margin_at", None)
