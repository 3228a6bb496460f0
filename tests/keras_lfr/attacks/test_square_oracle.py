"""The Square attack against a numpy port of AutoAttack's l-inf `SquareAttack`, query by query.

The port follows `attack_single_run` of AutoAttack's `square.py` (l-inf,
margin loss): the start x + ε·(vertical stripes: one random sign per
example, channel and column), clipped to the pixel range; then, at iteration
`it`, the fraction p = `p_selection(it)` (p_init halved after iterations 10,
50, 200, 500, 1000, 2000, 4000, 6000 and 8000, `it` first rescaled to a
budget of 10,000 when `resc_schedule`), a square window of side
s = max(round(√(p·h·w)), 1) whose pixels are set to the ball's boundary,
x ± ε with one random sign per channel (written as x_best + 2ε·sign,
projected onto the ball and the box), and the candidate is kept when its
margin z_y − max_{j≠y} z_j is lower than the best so far (or ≤ 0); examples
with margin ≤ 0 no longer change, and the loop stops once all are fooled.
The model is the numpy twin of a small ReLU CNN (`helpers.oracles`).

The randomness is the test's: `keras_lfr.ops.uniform` is replaced by draws
that put each window where the port puts it and give each channel the port's
sign, so every query can be compared. keras_lfr's query q ≥ 1 is
AutoAttack's iteration q − 1 (query 0 draws the stripes), with AutoAttack's
`n_queries` equal to `queries` in the rescaled schedule.
"""

import numpy as np
import pytest
from helpers.oracles import ConvNet, keras_model, random_weights, recording_iterate

from keras_lfr import attacks, ops

SHAPE = (8, 8, 2)


def margin(logits, labels):
    """z_y − max_{j≠y} z_j per example."""
    rows = np.arange(len(labels))
    others = logits.copy()
    others[rows, labels] = -np.inf
    return logits[rows, labels] - others.max(axis=1)


def p_selection(p_init, it, n_queries, rescale_schedule):
    """AutoAttack's `p_selection`, as written there."""
    if rescale_schedule:
        it = int(it / n_queries * 10000)
    if 10 < it <= 50:
        return p_init / 2
    if 50 < it <= 200:
        return p_init / 4
    if 200 < it <= 500:
        return p_init / 8
    if 500 < it <= 1000:
        return p_init / 16
    if 1000 < it <= 2000:
        return p_init / 32
    if 2000 < it <= 4000:
        return p_init / 64
    if 4000 < it <= 6000:
        return p_init / 128
    if 6000 < it <= 8000:
        return p_init / 256
    if 8000 < it:
        return p_init / 512
    return p_init


def square_side(p, height, width):
    return max(int(round(np.sqrt(p * height * width))), 1)


def square_numpy(net, x, y, eps, stripes, iterations):
    """AutoAttack's l-inf Square loop from the stripes, given each iteration's square and signs.

    `stripes` is `(batch, 1, width, channels)` of ±1; each iteration gives
    the side s, per example the window's top-left corner, and per example
    and channel the sign. Returns the history of `(x_best, margin_min)` after
    each iteration run, and `closest`, the smallest nonzero gap between two
    margins compared (or a margin and 0) where the candidate differs from the
    best point: one equal to it up to rounding changes nothing if accepted,
    and margins exactly equal come from a change that reached only inactive
    ReLUs, the same in both precisions.
    """
    x = x.astype(np.float64)
    x_best = np.clip(x + eps * stripes, 0.0, 1.0)
    margin_min = margin(net.logits(x_best), y)
    history, gaps = [(x_best.copy(), margin_min.copy())], [np.abs(margin_min)]
    for side, tops, lefts, signs in iterations:
        if not np.any(margin_min > 0):
            break
        to_fool = margin_min > 0
        new_deltas = np.zeros_like(x)
        for i in range(len(x)):
            window = (i, slice(tops[i], tops[i] + side), slice(lefts[i], lefts[i] + side))
            new_deltas[window] = 2.0 * eps * signs[i]
        x_new = np.clip(np.minimum(np.maximum(x_best + new_deltas, x - eps), x + eps), 0.0, 1.0)
        candidate = margin(net.logits(x_new), y)
        improved = (candidate < margin_min) | (candidate <= 0.0)
        accept = to_fool & improved
        differs = to_fool & (np.abs(x_new - x_best).max(axis=(1, 2, 3)) > 1e-6)
        gaps += [np.abs(candidate - margin_min)[differs], np.abs(candidate)[differs]]
        margin_min = np.where(accept, candidate, margin_min)
        x_best = np.where(accept[:, None, None, None], x_new, x_best)
        history.append((x_best.copy(), margin_min.copy()))
    gaps = np.concatenate(gaps)
    return history, np.where(gaps > 0, gaps, np.inf).min()


def draw_iterations(rng, batch, queries, p_init, rescale_schedule):
    """Random windows and signs for AutoAttack's iterations 0 … queries − 2, corners included."""
    height, width, channels = SHAPE
    iterations = []
    for it in range(queries - 1):
        side = square_side(p_selection(p_init, it, queries, rescale_schedule), height, width)
        tops = rng.integers(0, height - side + 1, size=batch)
        lefts = rng.integers(0, width - side + 1, size=batch)
        tops[:2], lefts[:2] = (0, height - side), (width - side, 0)  # the four edges
        signs = rng.choice([-1.0, 1.0], size=(batch, channels))[:, None, None, :]
        iterations.append((side, tops, lefts, signs))
    return iterations


def scripted_uniform(stripes, iterations, height, width):
    """Stands in for `ops.uniform`: the draws that make keras_lfr pick the port's squares.

    A sign is +ε where the draw is at least 0.5; the window's corner is
    int(u · (h − s + 1)), so u = (corner + 0.5) / (h − s + 1) picks `corner`
    if and only if keras_lfr's side s is the port's.
    """
    queue = [np.where(stripes > 0, 0.75, 0.25)]
    for side, tops, lefts, signs in iterations:
        queue.append(
            np.stack([(tops + 0.5) / (height - side + 1), (lefts + 0.5) / (width - side + 1)])
        )
        queue.append(np.where(signs > 0, 0.75, 0.25))

    def uniform(shape, seed, minval=0.0, maxval=1.0, dtype="float32"):
        del seed
        draw = queue.pop(0)
        assert tuple(draw.shape) == tuple(int(d) for d in shape), (draw.shape, shape)
        return (minval + (maxval - minval) * draw).astype(dtype)

    return uniform


@pytest.fixture(scope="module")
def problem():
    """A ReLU CNN on 8×8×2 images, its numpy twin, and a batch labelled by its predictions."""
    rng = np.random.default_rng(5)
    weights = random_weights(rng, input_shape=SHAPE)
    model = keras_model(input_shape=SHAPE)
    model.set_weights(weights)
    net = ConvNet(weights)
    x = rng.uniform(0.0, 1.0, size=(16, *SHAPE)).astype("float32")
    y = np.argmax(net.logits(x), axis=1).astype("int32")
    return model, net, x, y


# (queries, rescale_schedule): one iteration; AutoAttack's fixed schedule
# (p halves after iteration 10: sides 7 then 5); the rescaled one on 40
# queries (iteration it counts as 250·it: sides 7, 3, 3, 2, 2, 1, …).
CASES = [(2, True), (16, False), (40, True)]


@pytest.mark.parametrize("queries, rescale_schedule", CASES)
def test_square_matches_autoattack_query_by_query(problem, monkeypatch, queries, rescale_schedule):
    model, net, x, y = problem
    epsilon, p_init = 0.05, 0.8
    rng = np.random.default_rng(queries)
    height, width, channels = SHAPE
    stripes = rng.choice([-1.0, 1.0], size=(len(x), 1, width, channels))
    iterations = draw_iterations(rng, len(x), queries, p_init, rescale_schedule)
    history, closest = square_numpy(net, x, y, epsilon, stripes, iterations)
    assert closest > 1e-6  # no acceptance decided within rounding of a tie

    trace = []
    monkeypatch.setattr(ops, "iterate", recording_iterate(trace))
    monkeypatch.setattr(ops, "uniform", scripted_uniform(stripes, iterations, height, width))
    ours = attacks.square(
        model,
        x,
        y,
        epsilon=epsilon,
        queries=queries,
        p_init=p_init,
        rescale_schedule=rescale_schedule,
    ).numpy()

    (states,) = trace
    for query, (state, (x_best, margin_min)) in enumerate(
        zip(states, history[1:], strict=True), start=1
    ):
        np.testing.assert_allclose(state[0], x_best, atol=1e-6, err_msg=f"query {query}")
        np.testing.assert_allclose(
            state[1], margin_min, rtol=1e-4, atol=1e-5, err_msg=f"query {query}"
        )
    np.testing.assert_allclose(ours, history[-1][0], atol=1e-6)


def test_the_cases_accept_and_reject_and_shrink_the_squares(problem):
    # The comparison is not vacuous: candidates are accepted and rejected,
    # some examples get fooled (and then stop) and others not, and the side
    # of the square takes several values along each schedule.
    _, net, x, y = problem
    height, width, _ = SHAPE
    for queries, rescale_schedule in CASES:
        rng = np.random.default_rng(queries)
        stripes = rng.choice([-1.0, 1.0], size=(len(x), 1, width, SHAPE[2]))
        iterations = draw_iterations(rng, len(x), queries, 0.8, rescale_schedule)
        history, _ = square_numpy(net, x, y, 0.05, stripes, iterations)
        margins = np.stack([m for _, m in history])
        changed = margins[1:] != margins[:-1]
        assert changed.any() and not changed.all()
        if queries > 2:
            fooled = margins[-1] <= 0
            assert 0 < fooled.sum() < len(y)
            sides = {side for side, *_ in iterations[: len(history) - 1]}
            assert len(sides) >= 2, sides
    sides = [square_side(p_selection(0.8, it, 40, True), height, width) for it in range(6)]
    assert sides == [7, 3, 3, 2, 2, 1]
