"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a score-based black-box
attack, L-inf and L2, that sees the model only through forward passes of logits_fn.

Written after the reference implementation in fra31/auto-attack (square.py), in JAX: one fixed
batch with per-example success masks; each query's forward pass runs only on the examples
not yet successful (moved to the front, in chunks of static size, with a dynamic number of
chunks), as the reference queries only the points still robust; and squares built as masks
from iota comparisons so that every shape is static under jit while the square size changes.

Speed (issue 23): a query costs one forward pass, and nothing else in it is measurable next
to it (profiled on the quick-start MNIST CNN: the whole square-attack loop took the time of
its forward passes). On CPU the forward pass of a few hundred images at once ran 1.3-1.6x
slower than the same images in chunks of 32-128 (cache), so queries run in chunks
(`query_chunk`), and chunks holding only fooled points are skipped (`active_logits`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxadv.attacks.losses import TINY, objective_fn, success_fn
from jaxadv.attacks.precision import float32_inside
from jaxadv.attacks.restarts import best_of_restarts
from jaxadv.attacks.projections import NORMS, LogitsFn, l2_norm, project_linf

# Iterations (on the 10,000-query scale of the paper) after which the fraction p halves.
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(
    it: int, queries: int, p_init: float = 0.8, rescale: bool = True
) -> float:
  """The paper's schedule: the fraction p of the image that iteration `it` changes.

  p = p_init, halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000. With
  `rescale` the iteration is first mapped to the 10,000-query scale, int(it / queries * 10000),
  as the reference does by default; AutoAttack's standard version runs Square with 5,000
  queries and rescale=False.
  """
  if rescale:
    it = int(it / queries * 10000)
  return p_init / 2 ** sum(it > t for t in _P_HALVINGS)


def square_sizes(
    queries: int,
    height: int,
    width: int,
    norm: str,
    p_init: float = 0.8,
    rescale: bool = True,
) -> np.ndarray:
  """Side length in pixels of each iteration's square, int (queries,): round(sqrt(p H W)),
  at least 1 (L-inf) or the odd number >= 3 (L2), at most min(H, W)."""
  sizes = np.empty(queries, np.int32)
  for it in range(queries):
    s = int(
        round(
            math.sqrt(
                square_fraction(it, queries, p_init, rescale) * height * width
            )
        )
    )
    if norm == 'l2':
      s = max(s, 3)
      s += s % 2 == 0
    sizes[it] = min(max(s, 1), height, width)
  return sizes


# ----------------------------------------------------------------------------------------------
# Squares as masks.


def _corners(rng, batch, size, height, width):
  """Top-left corners (b,), (b,) of size x size squares, uniform over every position that
  fits. The reference draws from [0, H - size) and so never touches the last row or column;
  here [0, H - size] is used so every pixel can be covered."""
  k_top, k_left = jax.random.split(rng)
  top = jax.random.randint(k_top, (batch,), 0, height - size + 1)
  left = jax.random.randint(k_left, (batch,), 0, width - size + 1)
  return top, left


def _window(top, left, size, height, width):
  """Float mask (b, H, W, 1): 1 on the squares [top, top + size) x [left, left + size)."""
  rows = jnp.arange(height)[None, :] - top[:, None]
  cols = jnp.arange(width)[None, :] - left[:, None]
  in_rows = (rows >= 0) & (rows < size)
  in_cols = (cols >= 0) & (cols < size)
  return (in_rows[:, :, None] & in_cols[:, None, :])[..., None].astype(
      jnp.float32
  )


# ----------------------------------------------------------------------------------------------
# L2 bumps: the reference's eta(s), precomputed per size in numpy.


def _rings(rows: int, cols: int) -> np.ndarray:
  """Concentric rectangles around the centre (rows // 2, cols // 2) of a rows x cols patch:
  ring k (Chebyshev distance k) and everything inside it gets 1 / (k + 1)^2 more. Unit L2.
  """
  if rows == 0:
    return np.zeros((0, cols))
  i, j = np.ogrid[:rows, :cols]
  dist = np.maximum(np.abs(i - rows // 2), np.abs(j - cols // 2))
  num_rings = max(rows // 2, cols // 2) + 1
  tail = np.cumsum(1.0 / np.arange(num_rings, 0, -1) ** 2)[
      ::-1
  ]  # sum_{k>=d} 1/(k+1)^2
  out = tail[dist]
  return out / max(np.sqrt(np.sum(out**2)), TINY)


def _bump(size: int) -> np.ndarray:
  """The L2 update pattern of a size x size square: rings with + in the top half and - in the
  bottom half, unit L2 norm."""
  out = np.concatenate(
      [_rings(size // 2, size), -_rings(size - size // 2, size)]
  )
  return out / np.sqrt(np.sum(out**2))


@functools.lru_cache(maxsize=None)
def _bump_table(sizes: tuple[int, ...], height: int, width: int) -> np.ndarray:
  """(len(sizes), 2, H, W) float32: each bump and its transpose in the top-left corner."""
  table = np.zeros((len(sizes), 2, height, width), np.float32)
  for n, s in enumerate(sizes):
    table[n, 0, :s, :s] = _bump(s)
    table[n, 1, :s, :s] = _bump(s).T
  return table


def _place(patterns, transpose, top, left):
  """patterns (2, H, W) holding a bump in the top-left corner -> (b, H, W, 1) with example i's
  bump (transposed where transpose[i]) moved to (top[i], left[i])."""
  _, height, width = patterns.shape
  rows = jnp.arange(height)[None, :] - top[:, None]
  cols = jnp.arange(width)[None, :] - left[:, None]
  valid = (rows >= 0)[:, :, None] & (cols >= 0)[:, None, :]
  picked = patterns[
      transpose.astype(jnp.int32)[:, None, None],
      jnp.maximum(rows, 0)[:, :, None],
      jnp.maximum(cols, 0)[:, None, :],
  ]
  return jnp.where(valid, picked, 0.0)[..., None]


def _hw_norm(v):
  """L2 norm over height and width, per example and channel: (b, 1, 1, C)."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))


# ----------------------------------------------------------------------------------------------
# Starts and candidate updates.


def _init_linf(rng, x, eps):
  """Vertical stripes: x + eps * (a random sign per example, column and channel), in [0, 1]."""
  b, _, w, c = x.shape
  sign = jax.random.rademacher(rng, (b, 1, w, c), x.dtype)
  return jnp.clip(x + eps * sign, 0.0, 1.0)


def _init_l2(rng, x, eps):
  """A 5 x 5 grid of bumps of side H // 5, each with a random sign per example and channel
  (and, unlike the reference, a random transpose per example), scaled to L2 norm eps.
  """
  b, h, w, c = x.shape
  s = max(h // 5, 1)  # the reference needs H >= 5
  start = max((h - 5 * s) // 2, 0)
  tiles = [
      (start + s * r, start + s * q)
      for r in range(h // s)
      for q in range(w // s)
      if start + s * (r + 1) <= h and start + s * (q + 1) <= w
  ]
  tile_id = np.full((h, w), len(tiles), np.int32)  # len(tiles) = no tile
  plain = np.zeros((h, w), np.float32)
  flipped = np.zeros((h, w), np.float32)
  for n, (r0, q0) in enumerate(tiles):
    tile_id[r0 : r0 + s, q0 : q0 + s] = n
    plain[r0 : r0 + s, q0 : q0 + s] = _bump(s)
    flipped[r0 : r0 + s, q0 : q0 + s] = _bump(s).T
  k_sign, k_transpose = jax.random.split(rng)
  sign = jax.random.rademacher(k_sign, (b, len(tiles) + 1, c), x.dtype)
  transpose = jax.random.bernoulli(k_transpose, 0.5, (b, len(tiles) + 1))
  pattern = jnp.where(transpose[:, tile_id], flipped, plain)[
      ..., None
  ]  # (b, H, W, 1)
  delta = pattern * sign[:, tile_id, :]
  return jnp.clip(x + delta * eps / (l2_norm(delta) + TINY), 0.0, 1.0)


def _step_linf(rng, x, x_best, eps, size, level, table):
  """One square of side `size` per example, set to x +- eps (a random sign per channel)."""
  del level, table
  b, h, w, c = x.shape
  k_pos, k_sign = jax.random.split(rng)
  window = _window(*_corners(k_pos, b, size, h, w), size, h, w)
  sign = jax.random.rademacher(k_sign, (b, 1, 1, c), x.dtype)
  return project_linf(x_best + window * (2.0 * eps) * sign, x, eps)


def _step_l2(rng, x, x_best, eps, size, level, table):
  """The reference's L2 update: a new bump with a random sign per channel is added to the
  normalised old perturbation in square 1, square 2 is emptied, and the mass taken out of
  both squares (plus what is left of the budget) goes into square 1; then the whole
  perturbation is rescaled to L2 norm eps and clipped to [0, 1]."""
  b, h, w, c = x.shape
  k_pos1, k_pos2, k_sign, k_transpose = jax.random.split(rng, 4)
  top, left = _corners(k_pos1, b, size, h, w)
  window1 = _window(top, left, size, h, w)
  window2 = _window(*_corners(k_pos2, b, size, h, w), size, h, w)
  both = jnp.maximum(window1, window2)
  delta = x_best - x
  budget = jnp.sqrt(
      jnp.maximum(eps**2 - jnp.square(l2_norm(delta)), 0.0) / c
      + jnp.square(_hw_norm(delta * both))
  )
  bump = _place(
      table[level], jax.random.bernoulli(k_transpose, 0.5, (b,)), top, left
  )
  new = bump * jax.random.rademacher(
      k_sign, (b, 1, 1, c), x.dtype
  ) + delta * window1 / (_hw_norm(delta * window1) + TINY)
  new = new / (_hw_norm(new) + TINY) * budget
  delta = delta * (1.0 - both) + new
  return jnp.clip(x + delta * eps / (l2_norm(delta) + TINY), 0.0, 1.0)


_NORM_STEPS = {'linf': (_init_linf, _step_linf), 'l2': (_init_l2, _step_l2)}


# ----------------------------------------------------------------------------------------------
# The query loop.

# Rows per forward pass on CPU: measured on the quick-start MNIST CNN (467 images, 2-core CPU),
# chunks of 32-128 rows ran a forward pass 1.3-1.6x faster than the whole batch at once
# (activations stay in cache); accelerators take the whole batch.
CPU_QUERY_ROWS = 64


def query_chunk(batch: int, rows: int | None = None) -> int:
  """Rows per forward pass of Square's queries: the whole batch off CPU; on CPU (or given
  `rows`), chunks of about `rows` rows, balanced so padding stays under one row per chunk.
  """
  if rows is None:
    if jax.default_backend() != 'cpu':
      return batch
    rows = CPU_QUERY_ROWS
  if rows < 1:
    raise ValueError(f'query_rows must be >= 1, got {rows}')
  return -(-batch // -(-batch // rows))


def active_logits(logits_fn, x, active, chunk: int):
  """logits_fn on the rows of x where `active` only, in chunks of `chunk` rows: (b, C), rows
  not active hold zeros (with a single chunk, chunk >= b, every row is computed). The active rows are moved to the front (stable order), so a query
  costs ceil(n_active / chunk) forward passes of `chunk` rows: like the reference, which
  queries only the points still robust, Square stops paying for points it has fooled.
  """
  b = x.shape[0]
  if (
      chunk >= b
  ):  # one chunk: nothing to skip until all are done (the loop then stops)
    return logits_fn(x)
  n_chunks = -(-b // chunk)
  perm = jnp.argsort(~active, stable=True)  # active rows first
  rows = jnp.concatenate(
      [perm, perm[: n_chunks * chunk - b]]
  )  # pad with real rows
  x_rows = x[rows]
  out_struct = jax.eval_shape(logits_fn, x_rows[:chunk])
  out = jnp.zeros_like(
      x_rows,
      shape=(n_chunks * chunk,) + out_struct.shape[1:],
      dtype=out_struct.dtype,
  )

  def one_chunk(i, out):
    part = lax.dynamic_slice_in_dim(x_rows, i * chunk, chunk)
    return lax.dynamic_update_slice_in_dim(out, logits_fn(part), i * chunk, 0)

  n_active = jnp.sum(active.astype(jnp.int32))
  out = lax.fori_loop(0, (n_active + chunk - 1) // chunk, one_chunk, out)
  return out[jnp.argsort(perm)]


def _square_run(
    logits_fn,
    rng,
    x,
    objective,
    success,
    *,
    eps,
    norm,
    queries,
    p_init,
    rescale,
    chunk,
):
  """One run of `queries` iterations; returns, per example, the first successful point, else
  the highest-objective point found, (b, H, W, C). Examples misclassified at x keep x.
  Forward passes run in chunks of `chunk` rows over the examples still being attacked.
  """
  init, step = _NORM_STEPS[norm]
  b, h, w, c = x.shape
  sizes = square_sizes(queries, h, w, norm, p_init, rescale)
  distinct = tuple(sorted(set(sizes.tolist())))
  table = jnp.asarray(_bump_table(distinct, h, w)) if norm == 'l2' else None
  levels = jnp.asarray(np.searchsorted(distinct, sizes), jnp.int32)
  sizes = jnp.asarray(sizes)
  k_init, k_loop = jax.random.split(rng)
  everyone = jnp.ones_like(x, dtype=bool, shape=(b,))
  query = lambda xx, active: active_logits(logits_fn, xx, active, chunk)

  # As the reference, only points the model gets right at x are attacked (one query).
  done = success(query(x, everyone))
  x_best = jnp.where(done[:, None, None, None], x, init(k_init, x, eps))
  logits = query(x_best, ~done)
  f_best, done = objective(logits), done | success(logits)

  def body(s):
    i, x_best, f_best, done = s
    x_new = step(
        jax.random.fold_in(k_loop, i),
        x,
        x_best,
        eps,
        sizes[i],
        levels[i],
        table,
    )
    logits = query(x_new, ~done)  # zeros for done rows, which accept ignores
    f_new, ok = objective(logits), success(logits)
    # A candidate replaces the best point when it raises the objective or succeeds; points
    # that succeeded are frozen.
    accept = ~done & ((f_new > f_best) | ok)
    return (
        i + 1,
        jnp.where(accept[:, None, None, None], x_new, x_best),
        jnp.where(accept, f_new, f_best),
        done | (accept & ok),
    )

  # Stops early when every example has succeeded (the reference's break).
  cond = lambda s: (s[0] < queries) & ~jnp.all(s[3])
  _, x_best, _, _ = lax.while_loop(
      cond, body, (jnp.int32(0), x_best, f_best, done)
  )
  return x_best


def _check_square(x, norm, queries, p_init):
  if norm not in NORMS:
    raise ValueError(f'unknown norm {norm!r}; valid norms: {", ".join(NORMS)}')
  if x.ndim != 4:
    raise ValueError(f'square needs images (b, H, W, C), got shape {x.shape}')
  if (
      not isinstance(queries, (int, np.integer))
      or isinstance(queries, bool)
      or queries < 1
  ):
    raise ValueError(f'queries must be a positive int, got {queries!r}')
  if not 0 < p_init <= 1:
    raise ValueError(f'p_init must be in (0, 1], got {p_init}')


@float32_inside
def square(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    loss: str | None = None,
    target: jax.Array | None = None,
    rescale_schedule: bool = True,
    query_rows: int | None = None,
) -> jax.Array:
  """Square Attack (Andriushchenko et al. 2020): random search over square-shaped updates that
  uses only the logits, never gradients, so gradient masking does not stop it.

  Follows the reference (fra31/auto-attack, square.py): L-inf starts from vertical stripes
  x +- eps and sets one square per query to x +- eps (a random sign per channel); L2 starts
  from a grid of ring-shaped bumps and moves perturbation mass between two squares per query,
  keeping |delta|_2 = eps. The square covers a fraction p of the image, p following the
  published schedule (`square_fraction`, `square_sizes`). A candidate is kept when it raises
  the objective or succeeds, per example; examples that succeed, or that are already
  misclassified at x, stop changing.

  Departs from the reference in: one fixed batch with success masks, the forward pass of
  each query run only on the examples not yet successful, moved to the front of the batch
  and cut into cache-sized chunks on CPU (the reference shrinks the batch to the points
  still robust every query; the loop stops once all succeed); square positions,
  signs and the L2 bumps' orientation drawn per example (the reference shares the position
  and the L-inf signs across the batch); positions drawn from [0, H - s] inclusive; and the
  returned point of an unsuccessful example is its best point (the reference returns x).

  Args:
    eps: radius in pixel scale (L-inf or L2 per `norm`); may be traced.
    norm: 'linf' | 'l2'.
    queries: iterations, one forward pass of the batch each (plus two at the start and one
      per restart to score it); static.
    p_init: initial fraction of the image a square covers (0.8 in the paper).
    restarts: independent runs, merged as in `pgd` (first success, else highest objective).
    loss: the objective maximised, from LOSSES; None takes the reference's choice: the margin
      ('cw') untargeted, cross-entropy to the target ('ce') when `target` is given.
    target: optional int (b,) targets; success then means predicting the target.
    rescale_schedule: map the schedule to the 10,000-query scale (the reference's default);
      AutoAttack's standard version sets it False.
    query_rows: rows per forward pass (`query_chunk`): None = about CPU_QUERY_ROWS on CPU
      (cache-sized chunks), the whole batch on accelerators. Each query runs the forward
      pass only on the examples still being attacked (`active_logits`); the result does
      not depend on it beyond float rounding.
  Returns:
    stop_gradient(x_adv), (b, H, W, C) in [0, 1] and in the eps ball of x. Random draws of
    query i use jax.random.fold_in(the run's loop key, i).
  """
  _check_square(x, norm, queries, p_init)
  loss = ('cw' if target is None else 'ce') if loss is None else loss
  objective, success = objective_fn(loss, y, target), success_fn(y, target)
  run = lambda key: _square_run(
      logits_fn,
      key,
      x,
      objective,
      success,
      eps=eps,
      norm=norm,
      queries=queries,
      p_init=p_init,
      rescale=rescale_schedule,
      chunk=query_chunk(x.shape[0], query_rows),
  )
  x_adv, _, _ = best_of_restarts(
      run, logits_fn, objective, success, rng, x, restarts, 'loop'
  )
  return lax.stop_gradient(x_adv)
