"""Building blocks the corruptions share: per-image keys, and the static
linear operators (Gaussian filters, zooms, Pillow resizes) as small matrices
built once on the host in numpy, then applied on the device as einsums.

A separable operator on an image (H, W, C) is a pair of matrices (A (H', H),
B (W', W)): out = A @ img @ B^T per channel. Building it on the host keeps
every boundary rule of the reference libraries (scipy's 'reflect' and
'nearest', OpenCV's BORDER_REFLECT_101, Pillow's box filter supports) in one
readable place and costs nothing at run time.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# ITU-R BT.601 luma weights, as OpenCV's COLOR_RGB2GRAY and libjpeg use.
LUMA = (0.299, 0.587, 0.114)


def image_keys(rng: jax.Array, b: int) -> jax.Array:
  """(b,) keys: image i of a batch uses fold_in(rng, i), so its corruption
  does not depend on the batch size or on the other images."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(b))


# Random numbers. XLA:CPU takes seconds to compile one threefry draw of an
# image's size (2.7 s CPU for (8, 32, 32, 3) normals with jax 0.10, against
# 0.3 s for 4 numbers), per corruption and shape. So each image's key gives
# two 32-bit seeds through a small threefry draw, and the pixels' numbers
# come from a counter-based hash of (seed, stream, index): two rounds of
# MurmurHash3's 32-bit finalizer, which has full avalanche. The numbers are
# the same on every backend and compile in a fraction of a second.


def image_seeds(rng: jax.Array, b: int) -> jax.Array:
  """uint32 (b, 2): image i's seeds, from fold_in(rng, i)."""
  return jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(
      image_keys(rng, b)
  )


def _fmix32(h):
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def hash_bits(seed: jax.Array, shape, stream: int) -> jax.Array:
  """uint32 `shape` of random bits from one image's seed (2,) uint32; each
  `stream` (a small int) is an independent sequence."""
  n = int(np.prod(shape))
  counter = jnp.arange(n, dtype=jnp.uint32)
  s0 = _fmix32(seed[0] ^ jnp.uint32((0x9E3779B9 * (stream + 1)) % 2**32))
  h = _fmix32(_fmix32(counter + s0) ^ seed[1])
  return h.reshape(shape)


def uniform(seed, shape, stream: int, lo=0.0, hi=1.0) -> jax.Array:
  """float32 uniform in [lo, hi) (24 random bits)."""
  u = (hash_bits(seed, shape, stream) >> 8).astype(jnp.float32) * 2.0**-24
  return lo + (hi - lo) * u


def normal(seed, shape, stream: int) -> jax.Array:
  """float32 standard normal (Box-Muller on two uniform streams)."""
  u1 = uniform(seed, shape, 2 * stream + 1000)
  u2 = uniform(seed, shape, 2 * stream + 1001)
  return jnp.sqrt(-2.0 * jnp.log1p(-u1)) * jnp.cos(2.0 * jnp.pi * u2)


def randint(seed, shape, stream: int, lo, hi) -> jax.Array:
  """int32 uniform in [lo, hi) (lo, hi may be traced; hi - lo << 2^24)."""
  u = uniform(seed, shape, stream)
  return lo + jnp.floor(u * (hi - lo)).astype(jnp.int32)


def extend_index(j: np.ndarray, n: int, mode: str) -> np.ndarray:
  """Integer indices j (any, also far outside [0, n)) mapped into [0, n).

  mode: 'nearest' (clamp; scipy 'nearest', skimage's default), 'reflect'
  (d c b a | a b c d | d c b a: scipy/skimage 'reflect', OpenCV
  BORDER_REFLECT) or 'reflect101' (d c b | a b c d | c b a: OpenCV's default
  BORDER_REFLECT_101, scipy 'mirror', numpy 'reflect'); periodic beyond.
  """
  j = np.asarray(j)
  if mode == 'nearest' or n == 1:
    return np.clip(j, 0, n - 1)
  if mode == 'reflect':
    j = np.mod(j, 2 * n)
    return np.where(j >= n, 2 * n - 1 - j, j)
  if mode == 'reflect101':
    j = np.mod(j, 2 * n - 2)
    return np.where(j >= n, 2 * n - 2 - j, j)
  raise ValueError(f'unknown boundary mode {mode!r}')


def gaussian_kernel1d(sigma: float, truncate: float) -> np.ndarray:
  """scipy.ndimage.gaussian_filter1d's weights: radius int(truncate sigma +
  0.5), normalized; sigma <= 1e-15 is the identity (scipy skips the axis)."""
  if sigma <= 1e-15:
    return np.ones(1)
  r = int(truncate * float(sigma) + 0.5)
  t = np.arange(-r, r + 1, dtype=np.float64)
  k = np.exp(-0.5 * t * t / float(sigma) ** 2)
  return k / k.sum()


def filter_matrix(n: int, kernel: np.ndarray, mode: str) -> np.ndarray:
  """(n, n) matrix of a centred 1-D correlation with `kernel` (odd length)
  under boundary `mode` (see extend_index)."""
  r = len(kernel) // 2
  m = np.zeros((n, n))
  rows = np.arange(n)
  for k, w in enumerate(kernel):
    np.add.at(m, (rows, extend_index(rows + k - r, n, mode)), w)
  return m


@functools.lru_cache(maxsize=None)
def gaussian_matrix(n: int, sigma: float, truncate: float, mode: str):
  """(n, n) float32 matrix of scipy's gaussian_filter1d along one axis."""
  k = gaussian_kernel1d(sigma, truncate)
  return filter_matrix(n, k, mode).astype(np.float32)


def gaussian_matrix_traced(n: int, sigma, truncate: float, mode: str):
  """gaussian_matrix built on the device, so sigma may be traced: weights
  at offsets up to 3n (beyond that the kernel is cut), radius
  int(truncate sigma + 0.5); sigma <= 1e-15 gives the identity."""
  reach = 3 * n
  t = jnp.arange(-reach, reach + 1, dtype=jnp.float32)
  sig = jnp.maximum(sigma, 1e-15)
  radius = jnp.floor(truncate * sig + 0.5)
  w = jnp.where(jnp.abs(t) <= radius, jnp.exp(-0.5 * (t / sig) ** 2), 0.0)
  w = jnp.where(sigma > 1e-15, w / w.sum(), (t == 0).astype(jnp.float32))
  rows = jnp.arange(n)[:, None]
  cols = _extend_jnp(rows + jnp.arange(-reach, reach + 1)[None, :], n, mode)
  m = jnp.zeros((n, n), jnp.float32)
  return m.at[jnp.broadcast_to(rows, cols.shape), cols].add(
      jnp.broadcast_to(w, cols.shape)
  )


def separable(a: np.ndarray, b: np.ndarray, x: jax.Array) -> jax.Array:
  """out[..., i, j, c] = sum_kl a[i, k] x[..., k, l, c] b[j, l]: a (H', H)
  on the rows and b (W', W) on the columns of x (..., H, W, C)."""
  a = jnp.asarray(a, x.dtype)
  b = jnp.asarray(b, x.dtype)
  hp = jax.lax.Precision.HIGHEST
  y = jnp.einsum('ik,...klc->...ilc', a, x, precision=hp)
  return jnp.einsum('jl,...ilc->...ijc', b, y, precision=hp)


def gaussian_blur(x: jax.Array, sigma, truncate: float, mode: str):
  """skimage.filters.gaussian / scipy gaussian_filter over H and W of x
  (..., H, W, C) (sigma 0 on the channel axis); sigma may be traced."""
  h, w = x.shape[-3], x.shape[-2]
  return separable(
      gaussian_matrix_traced(h, sigma, truncate, mode),
      gaussian_matrix_traced(w, sigma, truncate, mode),
      x,
  )


@functools.lru_cache(maxsize=None)
def pil_box_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) float32 matrix of Pillow's resize with Image.BOX along one
  axis, following Pillow's precompute_coeffs (libImaging/Resample.c): output
  pixel o is centred at (o + 0.5) s on the input (s = n_in / n_out), the
  support is 0.5 max(s, 1), weights box((i - centre + 0.5) / max(s, 1)) with
  box(t) = 1 on (-0.5, 0.5], normalized. Pillow then rounds to uint8 after
  each pass; this is the exact real-valued operator."""
  scale = n_in / n_out
  fscale = max(scale, 1.0)
  support = 0.5 * fscale
  m = np.zeros((n_out, n_in))
  for o in range(n_out):
    centre = (o + 0.5) * scale
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), n_in)
    t = (np.arange(lo, hi) - centre + 0.5) / fscale
    w = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
    if w.sum() > 0:
      m[o, lo:hi] = w / w.sum()
  return m.astype(np.float32)


def _linear_zoom(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) matrix of scipy.ndimage.zoom(order=1) along one axis
  (grid_mode=False: corners aligned, input o (n_in - 1) / (n_out - 1))."""
  m = np.zeros((n_out, n_in))
  if n_out == 1 or n_in == 1:
    m[:, 0] = 1.0
    return m
  pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
  lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
  frac = pos - lo
  hi = np.minimum(lo + 1, n_in - 1)
  np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m


@functools.lru_cache(maxsize=None)
def clipped_zoom_matrix(n: int, z: float) -> np.ndarray:
  """(n, n) float32 matrix of make_cifar_c.py's clipped_zoom along one axis:
  crop the central ceil(n / z) pixels (top (n - ch) // 2), zoom them by z
  with scipy.ndimage.zoom(order=1) to round(ch z) pixels, keep n of them
  from (round(ch z) - n) // 2. (imagecorruptions keeps the first n instead;
  the two agree whenever round(ch z) - n < 2.)"""
  ch = int(math.ceil(n / float(z)))
  top = (n - ch) // 2
  n_out = int(round(ch * z))
  trim = (n_out - n) // 2
  m = np.zeros((n, n))
  m[:, top : top + ch] = _linear_zoom(ch, n_out)[trim : trim + n]
  return m.astype(np.float32)


def bilinear_sample(img, rows, cols, mode: str):
  """img (H, W, C) at real coordinates rows, cols (both (H', W')) with
  bilinear weights; neighbours outside the image are mapped by `mode`
  ('reflect' as scipy's map_coordinates(order=1), 'reflect101' as OpenCV's
  remap with BORDER_REFLECT_101). Returns (H', W', C)."""
  h, w = img.shape[0], img.shape[1]
  r0 = jnp.floor(rows)
  c0 = jnp.floor(cols)
  fr = (rows - r0)[..., None]
  fc = (cols - c0)[..., None]
  r0 = r0.astype(jnp.int32)
  c0 = c0.astype(jnp.int32)

  def at(r, c):
    return img[_extend_jnp(r, h, mode), _extend_jnp(c, w, mode)]

  top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
  bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
  return top * (1 - fr) + bottom * fr


def _extend_jnp(j, n, mode):
  """extend_index on the device (periodic, so any offset is valid)."""
  if n == 1:
    return jnp.zeros_like(j)
  if mode == 'reflect':
    j = jnp.mod(j, 2 * n)
    return jnp.where(j >= n, 2 * n - 1 - j, j)
  if mode == 'reflect101':
    j = jnp.mod(j, 2 * n - 2)
    return jnp.where(j >= n, 2 * n - 2 - j, j)
  return jnp.clip(j, 0, n - 1)


def luma(x: jax.Array) -> jax.Array:
  """(..., 3) RGB -> (..., 1) BT.601 luma, as OpenCV's COLOR_RGB2GRAY."""
  w = jnp.asarray(LUMA, x.dtype)
  return jnp.sum(x * w, axis=-1, keepdims=True)
