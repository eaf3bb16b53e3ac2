"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise.

Each takes (rng, x) with x float (b, H, W, C) in [0, 1] and returns the same
shape, clipped to [0, 1]; image i of the batch draws from fold_in(rng, i).
Parameters are explicit keywords and may be traced (the CIFAR-10-C values
are in `jaxadv.corruptions.CIFAR10_C`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxadv.corruptions import _ops


def _per_image(fn, rng, x):
  return jax.vmap(fn)(_ops.image_seeds(rng, x.shape[0]), x)


def gaussian_noise(rng: jax.Array, x: jax.Array, *, sigma: float):
  """x + N(0, sigma^2) per pixel and channel, clipped (make_cifar_c.py
  gaussian_noise; sigma in pixel scale, e.g. 0.08)."""

  def one(seed, img):
    return img + sigma * _ops.normal(seed, img.shape, 0)

  return jnp.clip(_per_image(one, rng, x), 0.0, 1.0)


def shot_noise(rng: jax.Array, x: jax.Array, *, rate: float):
  """Poisson(x rate) / rate per pixel and channel, clipped (make_cifar_c.py
  shot_noise: photon counts at `rate` photons for a white pixel)."""

  def one(key, img):
    counts = jax.random.poisson(key, img * rate, img.shape)
    return counts.astype(img.dtype) / rate

  # jax.random.poisson (exact: inversion below rate 10, transformed
  # rejection above) needs a threefry key of its own.
  out = jax.vmap(one)(_ops.image_keys(rng, x.shape[0]), x)
  return jnp.clip(out, 0.0, 1.0)


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
