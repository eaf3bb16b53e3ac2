"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise.

Each takes (rng, x) with x float (b, H, W, C) in [0, 1] and returns the same
shape, clipped to [0, 1]; image i of the batch draws from fold_in(rng, i).
Parameters are explicit keywords and may be traced (the CIFAR-10-C values
are in `jaxadv.corruptions.CIFAR10_C`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.corruptions import _ops


def _per_image(fn, rng, x):
  return jax.vmap(fn)(_ops.image_seeds(rng, x.shape[0]), x)


def gaussian_noise(rng: jax.Array, x: jax.Array, *, sigma: float):
  """x + N(0, sigma^2) per pixel and channel, clipped (make_cifar_c.py
  gaussian_noise; sigma in pixel scale, e.g. 0.08)."""

  def one(seed, img):
    return img + sigma * _ops.normal(seed, img.shape, 0)

  return jnp.clip(_per_image(one, rng, x), 0.0, 1.0)


def poisson(seed, lam, *, candidates: int = 12, steps: int = 40):
  """Poisson(lam) samples, float32 of lam's shape, for one image's seed.

  jax.random.poisson runs while loops (seconds to compile; 70 images/s for
  CIFAR shot noise under vmap on the shared 2-core CPU); this uses the same
  two exact methods as numpy's legacy sampler, with fixed work:
  - lam < 10: inversion, summing the pmf by its recurrence for `steps`
    terms (P(X > 40) < 1e-11 there);
  - lam >= 10: Hoermann's transformed rejection (PTRS, 1993) on
    `candidates` (U, V) pairs, keeping the first accepted. A pair is
    accepted with probability 0.75 at lam = 10, 0.87 at lam = 500
    (measured), so all 12 fail with probability < 1e-7; then the last
    candidate is kept (a bias far below the sampling noise).
  """
  lam = jnp.asarray(lam, jnp.float32)
  shape = lam.shape
  # Inversion.
  u = _ops.uniform(seed, shape, 0)

  def term(i, carry):
    k, p, cdf = carry
    k = k + (u > cdf)
    p = p * lam / i.astype(jnp.float32)
    return k, p, cdf + p

  p0 = jnp.exp(-lam)
  small, _, _ = lax.fori_loop(1, steps + 1, term, (jnp.zeros(shape), p0, p0))
  # Transformed rejection, vectorized over the candidates.
  lam_r = jnp.maximum(lam, 10.0)[None]
  slam, loglam = jnp.sqrt(lam_r), jnp.log(lam_r)
  b = 0.931 + 2.53 * slam
  a = -0.059 + 0.02483 * b
  invalpha = 1.1239 + 1.1328 / (b - 3.4)
  vr = 0.9277 - 3.6224 / (b - 2.0)
  uu = _ops.uniform(seed, (candidates, *shape), 1) - 0.5
  vv = _ops.uniform(seed, (candidates, *shape), 2)
  us = 0.5 - jnp.abs(uu)
  k = jnp.floor((2.0 * a / us + b) * uu + lam_r + 0.43)
  fast = (us >= 0.07) & (vv <= vr)
  log_ratio = jnp.log(vv) + jnp.log(invalpha) - jnp.log(a / (us * us) + b)
  log_pmf = -lam_r + k * loglam - jax.scipy.special.gammaln(k + 1.0)
  slow = (k >= 0) & ~((us < 0.013) & (vv > us)) & (log_ratio <= log_pmf)
  ok = fast | slow
  first = jnp.argmax(ok, axis=0)
  picked = jnp.take_along_axis(k, first[None], axis=0)[0]
  large = jnp.where(ok.any(axis=0), picked, jnp.maximum(k[-1], 0.0))
  return jnp.where(lam < 10.0, small, large)


def shot_noise(rng: jax.Array, x: jax.Array, *, rate: float):
  """Poisson(x rate) / rate per pixel and channel, clipped (make_cifar_c.py
  shot_noise: photon counts at `rate` photons for a white pixel; numpy's
  sampler there, `poisson` here)."""

  def one(seed, img):
    return poisson(seed, img * rate) / rate

  return jnp.clip(_per_image(one, rng, x), 0.0, 1.0)


def impulse_noise(rng: jax.Array, x: jax.Array, *, amount: float):
  """Salt and pepper: each pixel *channel* is replaced with probability
  `amount`, by 1 or 0 with equal odds (skimage random_noise(mode='s&p'), as
  make_cifar_c.py calls it; current skimage draws the replaced values as
  independent Bernoulli trials, as here; the skimage of 2018 drew exactly
  ceil(amount size / 2) salt and as many pepper positions)."""

  def one(seed, img):
    hit = _ops.uniform(seed, img.shape, 0) < amount
    salt = _ops.uniform(seed, img.shape, 1) < 0.5
    return jnp.where(hit, salt.astype(img.dtype), img)

  return jnp.clip(_per_image(one, rng, x), 0.0, 1.0)
