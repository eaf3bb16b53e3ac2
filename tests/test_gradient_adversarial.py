"""Tests of the GREAT / GREACE building blocks (jaxadv.gradient_adversarial).

Gradient checks run in float64 inside `jax.enable_x64`, scoped to each test so
64-bit mode does not leak into other test modules.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxadv import gradient_adversarial as ga

CLASSES = 4


def _x64():
  if hasattr(jax, 'enable_x64'):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top

  return enable_x64()


def _mlp_params(key, d_in=6, hidden=5, classes=CLASSES, scale=1.0):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  return {
      'w1': scale * jax.random.normal(k1, (d_in, hidden)) / np.sqrt(d_in),
      'b1': 0.3 * jax.random.normal(k2, (hidden,)),
      'w2': jax.random.normal(k3, (hidden, classes)),
      'b2': 0.3 * jax.random.normal(k4, (classes,)),
  }


def _mlp(params, x):
  """Smooth (tanh) MLP on x (b, ...) flattened to (b, 6) -> logits (b, 4)."""
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params['w1'] + params['b1'])
  return h @ params['w2'] + params['b2']


def _problem(b=3):
  """Main and aux MLPs, images x (b, 1, 2, 3) in [0, 1] and labels (b,)."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  main = _mlp_params(keys[0], scale=2.0)
  aux = _mlp_params(keys[1])  # sees g, whose entries here are O(1)
  x = jax.random.uniform(keys[2], (b, 1, 2, 3))
  y = jnp.arange(b) % CLASSES
  return main, aux, x, y


def _nll_grad(params, x, y):
  """Reference g: grad_x of sum_i -log p_{y_i}(x_i), by plain autodiff."""

  def loss(x):
    return -jnp.sum(
        jnp.take_along_axis(
            jax.nn.log_softmax(_mlp(params, x)), y[:, None], axis=-1
        )
    )

  return jax.grad(loss)(x)


def _central_diff(f, flat, h=1e-5):
  """Central finite differences of scalar f at the flat vector `flat`."""
  eye = jnp.eye(flat.size, dtype=flat.dtype)
  plus = jax.vmap(lambda e: f(flat + h * e))(eye)
  minus = jax.vmap(lambda e: f(flat - h * e))(eye)
  return (plus - minus) / (2 * h)


def _assert_close(actual, expected, rtol=1e-6):
  actual, expected = np.asarray(actual), np.asarray(expected)
  scale = np.max(np.abs(expected))
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------------------
# Whole objective: double backprop against finite differences.


@pytest.mark.parametrize(
    'use_great,use_greace', [(True, True), (True, False), (False, True)]
)
def test_great_parameter_gradients_match_finite_differences(
    use_great, use_greace
):
  alpha, beta = 0.7, 1.5
  with _x64():
    main, aux, x, y = _problem()
    main, aux, x = jax.tree.map(lambda a: a.astype(jnp.float64), (main, aux, x))

    def objective(main, aux, alpha=alpha):
      return ga.great_losses(
          lambda x: _mlp(main, x),
          lambda g: _mlp(aux, g),
          x,
          y,
          alpha=alpha,
          beta=beta,
          use_great=use_great,
          use_greace=use_greace,
      )[0]

    g_main, g_aux = jax.jit(jax.grad(objective, argnums=(0, 1)))(main, aux)

    # What each network should receive, as plain scalar functions of its own
    # parameters. GREACE's extra logit gradient beta * q * 1[k != y] is the
    # gradient of beta * sum_{k != y} q_k z_k with q held at the base point.
    g0 = _nll_grad(main, x, y)
    q0 = jax.nn.softmax(_mlp(aux, g0))
    negatives = 1.0 - jax.nn.one_hot(y, CLASSES, dtype=jnp.float64)
    flat_main, unravel_main = ravel_pytree(main)
    flat_aux, unravel_aux = ravel_pytree(aux)

    def ce(logits):
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def main_reference(flat):
      p = unravel_main(flat)
      z = _mlp(p, x)
      value = ce(z)
      if use_greace:
        value += beta * jnp.mean(jnp.sum(q0 * negatives * z, axis=-1))
      if use_great:
        value -= alpha * ce(_mlp(aux, _nll_grad(p, x, y)))
      return value

    def aux_reference(flat):
      return ce(_mlp(unravel_aux(flat), g0))

    fd_main = _central_diff(jax.jit(main_reference), flat_main)
    fd_aux = _central_diff(jax.jit(aux_reference), flat_aux)
    _assert_close(ravel_pytree(g_main)[0], fd_main)
    _assert_close(ravel_pytree(g_aux)[0], fd_aux)

    # The check has teeth: the reversed aux term and GREACE's term change
    # the main gradient by much more than the tolerance.
    g_no_rev = jax.grad(objective)(main, aux, 0.0)
    change = np.linalg.norm(ravel_pytree(g_main)[0] - ravel_pytree(g_no_rev)[0])
    if use_great:
      assert change > 1e-2 * np.linalg.norm(fd_main)
    else:
      # GREACE only: alpha never reaches the main network.
      assert change < 1e-12 * np.linalg.norm(fd_main)
    if use_greace:
      plain = jax.grad(lambda p: ce(_mlp(p, x)))(main)
      diff = ravel_pytree(g_no_rev)[0] - ravel_pytree(plain)[0]
      assert np.linalg.norm(diff) > 1e-2 * np.linalg.norm(fd_main)


def test_great_losses_outputs_and_aux_gradient_independent_of_beta():
  main, aux, x, y = _problem(b=5)
  calls = []

  def run(main, aux, beta):
    def main_fn(x):
      calls.append('main')
      return _mlp(main, x), {'seen': x.shape}

    def aux_fn(g):
      calls.append('aux')
      return _mlp(aux, g), {'seen': g.shape}

    return ga.great_losses(
        main_fn, aux_fn, x, y, alpha=0.5, beta=beta, has_aux=True
    )

  total, out = run(main, aux, 2.0)
  assert calls == ['main', 'aux']  # one forward pass of each network
  assert out.main_aux == {'seen': x.shape}
  assert out.aux_aux == {'seen': x.shape}
  assert out.g.shape == x.shape and out.g.dtype == x.dtype
  assert out.cls_loss.shape == out.aux_loss.shape == (5,)
  np.testing.assert_allclose(out.g, _nll_grad(main, x, y), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      out.cls_loss,
      optax.softmax_cross_entropy_with_integer_labels(_mlp(main, x), y),
      rtol=1e-6,
  )
  np.testing.assert_allclose(out.aux_logits, _mlp(aux, out.g), rtol=1e-6)
  np.testing.assert_allclose(
      total, out.cls_loss.mean() + out.aux_loss.mean(), rtol=1e-6
  )

  # GREACE's aux_probs send nothing back to the aux network: its gradient
  # is the same whatever beta is (also under jit with traced alpha, beta).
  grad = jax.jit(jax.grad(lambda a, beta: run(main, a, beta)[0]))
  np.testing.assert_allclose(
      ravel_pytree(grad(aux, 0.0))[0],
      ravel_pytree(grad(aux, 5.0))[0],
      rtol=1e-6,
  )


# ----------------------------------------------------------------------------
# Gradient reversal.


def test_grad_reversal_identity_forward_and_minus_alpha_backward():
  x = jnp.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.5]])
  w = jnp.array([[0.3, 1.0, -2.0], [4.0, 0.1, 1.0]])
  np.testing.assert_array_equal(ga.grad_reversal(x, 0.7), x)
  tree = {'a': x, 'b': (x[0],)}
  out = ga.grad_reversal(tree, 0.7)
  np.testing.assert_array_equal(out['a'], x)
  np.testing.assert_array_equal(out['b'][0], x[0])

  def f(x, alpha):
    return jnp.sum(w * ga.grad_reversal(x, alpha))

  np.testing.assert_allclose(jax.grad(f)(x, 0.7), -0.7 * w, rtol=1e-6)
  # Traced alpha under jit; alpha gets a zero cotangent; integer alpha.
  dx, dalpha = jax.jit(jax.grad(f, argnums=(0, 1)))(x, jnp.float32(2.5))
  np.testing.assert_allclose(dx, -2.5 * w, rtol=1e-6)
  assert dalpha == 0.0
  np.testing.assert_allclose(jax.grad(f)(x, 1), -w, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda x: ga.grad_reversal(x, 0.3))(x), x)
  # Pytree cotangents are all flipped.
  dtree = jax.grad(
      lambda t: jnp.sum(w * ga.grad_reversal(t, 0.5)['a'])
      + jnp.sum(ga.grad_reversal(t, 0.5)['b'][0])
  )(tree)
  np.testing.assert_allclose(dtree['a'], -0.5 * w, rtol=1e-6)
  np.testing.assert_allclose(dtree['b'][0], -0.5 * jnp.ones(3), rtol=1e-6)


def test_grad_reversal_under_vmap_and_grad_of_grad():
  with _x64():
    x = jnp.array([[1.0, -2.0, 3.0], [0.5, 0.25, -1.5]], jnp.float64)
    alpha = jnp.float64(0.4)

    def f(x, alpha):
      return jnp.sum(ga.grad_reversal(x, alpha) ** 3)

    # d/dx = -alpha * 3 x^2 per row, under vmap with a traced alpha.
    per_row = jax.jit(jax.vmap(jax.grad(f), in_axes=(0, None)))(x, alpha)
    np.testing.assert_allclose(per_row, -alpha * 3 * x**2, rtol=1e-12)
    # Second derivative: d/dx sum(-alpha 3 x^2) = -alpha 6 x.
    second = jax.grad(lambda x: jnp.sum(jax.grad(f)(x, alpha)))(x)
    np.testing.assert_allclose(second, -alpha * 6 * x, rtol=1e-12)

    # A reversal on each side of a square reverses twice: +alpha^2 * 2 x.
    def h(x):
      return jnp.sum(
          ga.grad_reversal(
              jax.grad(lambda x: jnp.sum(ga.grad_reversal(x, alpha) ** 2))(x),
              alpha,
          )
      )

    np.testing.assert_allclose(
        jax.grad(h)(x), alpha**2 * 2 * jnp.ones_like(x), rtol=1e-12
    )


# ----------------------------------------------------------------------------
# GREACE.


def test_greace_value_is_cross_entropy_and_gradient_is_the_formula():
  with _x64():
    key = jax.random.PRNGKey(3)
    k1, k2, k3 = jax.random.split(key, 3)
    z = 3.0 * jax.random.normal(k1, (6, CLASSES), jnp.float64)
    y = jnp.array([0, 1, 2, 3, 0, 2])
    q = jax.nn.softmax(jax.random.normal(k2, (6, CLASSES), jnp.float64))
    w = jax.random.uniform(k3, (6,), jnp.float64)  # upstream cotangent
    beta = 1.7

    np.testing.assert_allclose(
        ga.greace_cross_entropy(z, y, q, beta),
        optax.softmax_cross_entropy_with_integer_labels(z, y),
        rtol=1e-12,
    )

    def f(z, q, beta):
      return jnp.sum(w * ga.greace_cross_entropy(z, y, q, beta))

    dz, dq, dbeta = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(z, q, beta)
    onehot = jax.nn.one_hot(y, CLASSES, dtype=jnp.float64)
    expected = w[:, None] * (
        jax.nn.softmax(z) - onehot + beta * q * (1 - onehot)
    )
    np.testing.assert_allclose(dz, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(dq, 0.0)
    assert dbeta == 0.0
    # The true class's gradient is untouched; beta = 0 is plain CE.
    ce_grad = jax.grad(
        lambda z: jnp.sum(
            w * optax.softmax_cross_entropy_with_integer_labels(z, y)
        )
    )(z)
    np.testing.assert_allclose(
        jnp.sum(dz * onehot, -1), jnp.sum(ce_grad * onehot, -1), rtol=1e-12
    )
    np.testing.assert_allclose(
        jax.grad(f)(z, q, 0.0), ce_grad, rtol=1e-12, atol=1e-15
    )


def test_greace_inside_outer_parameter_gradient():
  with _x64():
    main, aux, x, y = _problem(b=4)
    main, x = jax.tree.map(lambda a: a.astype(jnp.float64), (main, x))
    q = jax.nn.softmax(_mlp(aux, x).astype(jnp.float64))
    beta = 2.0
    grads = jax.grad(
        lambda p: jnp.mean(ga.greace_cross_entropy(_mlp(p, x), y, q, beta))
    )(main)
    z, vjp_fn = jax.vjp(lambda p: _mlp(p, x), main)
    onehot = jax.nn.one_hot(y, CLASSES, dtype=jnp.float64)
    dz = (jax.nn.softmax(z) - onehot + beta * q * (1 - onehot)) / 4
    (expected,) = vjp_fn(dz)
    _assert_close(ravel_pytree(grads)[0], ravel_pytree(expected)[0], rtol=1e-12)


def test_greace_low_precision_logits():
  z = jnp.array([[2.0, -1.0, 0.5, 0.0]], jnp.bfloat16)
  y = jnp.array([2])
  q = jnp.full((1, CLASSES), 0.25)
  loss = ga.greace_cross_entropy(z, y, q, 1.0)
  assert loss.dtype == jnp.float32
  dz = jax.grad(lambda z: ga.greace_cross_entropy(z, y, q, 1.0).sum())(z)
  assert dz.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(dz)))


# ----------------------------------------------------------------------------
# Masked input gradient.


def test_masked_input_gradient_is_true_class_log_prob_gradient():
  with _x64():
    main, _, x, y = _problem(b=5)
    main, x = jax.tree.map(lambda a: a.astype(jnp.float64), (main, x))
    g = ga.masked_input_gradient(lambda x: _mlp(main, x), x, y)
    assert g.shape == x.shape and g.dtype == x.dtype
    np.testing.assert_allclose(g, _nll_grad(main, x, y), rtol=1e-12, atol=1e-15)
    # Per example (the MLP has no cross-example interaction).
    per_example = jax.vmap(
        lambda xi, yi: _nll_grad(main, xi[None], yi[None])[0]
    )(x, y)
    np.testing.assert_allclose(g, per_example, rtol=1e-12, atol=1e-15)
    logits, g2 = ga.logits_and_masked_input_gradient(
        lambda x: _mlp(main, x), x, y
    )
    np.testing.assert_allclose(logits, _mlp(main, x), rtol=1e-12)
    np.testing.assert_array_equal(g2, g)


def test_masked_input_gradient_applies_the_mask():
  # Label smoothing gives the loss w.r.t. the softmax output components on
  # every class: the mask keeps only the true class's, -q_y / a_y, so g is
  # q_y times the gradient of -log p_y, not the smoothed loss's gradient.
  smoothing = 0.3
  with _x64():
    main, _, x, y = _problem(b=5)
    main, x = jax.tree.map(lambda a: a.astype(jnp.float64), (main, x))
    targets = optax.smooth_labels(
        jax.nn.one_hot(y, CLASSES, dtype=jnp.float64), smoothing
    )

    def smoothed(log_probs, y):
      del y
      return -jnp.sum(targets * log_probs, axis=-1)

    fn = lambda x: _mlp(main, x)
    g = ga.masked_input_gradient(fn, x, y, loss_fn=smoothed)
    q_y = 1 - smoothing + smoothing / CLASSES
    np.testing.assert_allclose(
        g, q_y * _nll_grad(main, x, y), rtol=1e-12, atol=1e-15
    )
    unmasked = jax.grad(
        lambda x: jnp.sum(smoothed(jax.nn.log_softmax(fn(x)), y))
    )(x)
    assert np.linalg.norm(g - unmasked) > 0.05 * np.linalg.norm(unmasked)


def test_masked_input_gradient_finite_when_true_class_prob_underflows():
  # p_y ~ exp(-300) underflows in float32; g must stay finite and equal the
  # gradient of -log p_y = grad(logsumexp z) - grad(z_y).
  w = jnp.array(
      [[300.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
  )
  fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.concatenate(
      [w, -w[:, :1]], axis=1
  )
  x = jnp.ones((1, 1, 2, 3))
  y = jnp.array([2])
  g = ga.masked_input_gradient(fn, x, y)
  assert bool(jnp.all(jnp.isfinite(g)))
  np.testing.assert_allclose(g, _nll_grad_linear(fn, x, y), atol=1e-4)


def _nll_grad_linear(fn, x, y):
  ce = optax.softmax_cross_entropy_with_integer_labels
  return jax.grad(lambda x: jnp.sum(ce(fn(x), y)))(x)


def test_masked_input_gradient_is_differentiable_in_parameters():
  with _x64():
    main, _, x, y = _problem(b=3)
    main, x = jax.tree.map(lambda a: a.astype(jnp.float64), (main, x))
    flat, unravel = ravel_pytree(main)

    def f(flat):
      g = ga.masked_input_gradient(lambda x: _mlp(unravel(flat), x), x, y)
      return jnp.sum(g**2)

    _assert_close(jax.grad(f)(flat), _central_diff(jax.jit(f), flat))


# ----------------------------------------------------------------------------
# Schedules.


def test_poly_ramp_and_decay_values():
  np.testing.assert_allclose(ga.poly_ramp(0.0, 2.0), 0.0, atol=1e-7)
  np.testing.assert_allclose(
      ga.poly_ramp(0.5, 2.0), 2.0 * (1 - 0.5**0.9), rtol=1e-6
  )
  np.testing.assert_allclose(ga.poly_ramp(1.0, 2.0), 2.0, rtol=1e-6)
  np.testing.assert_allclose(ga.poly_ramp(0.5, 1.0, power=1.0), 0.5)
  np.testing.assert_allclose(ga.poly_decay(0.0), 1.0)
  np.testing.assert_allclose(ga.poly_decay(1.0), 0.0, atol=1e-7)
  # Traced, vectorized, monotone, clipped outside [0, 1].
  f = jnp.linspace(-0.5, 1.5, 21)
  ramp = jax.jit(ga.poly_ramp)(f, 10.0)
  assert bool(jnp.all(jnp.diff(ramp) >= 0))
  np.testing.assert_allclose(ramp[0], 0.0, atol=1e-6)
  np.testing.assert_allclose(ramp[-1], 10.0, rtol=1e-6)
