"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur.

Each takes (rng, x) with x float (b, H, W, C) in [0, 1] and returns the same
shape in [0, 1]; image i draws from fold_in(rng, i). Kernels and zoom
operators are built on the host from the (static) parameters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from jaxadv.corruptions import _ops

# Defocus blur.


def _cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
  """OpenCV's getGaussianKernel(ksize, sigma > 0)."""
  t = np.arange(ksize) - (ksize - 1) / 2.0
  k = np.exp(-t * t / (2.0 * sigma * sigma))
  return k / k.sum()


@functools.lru_cache(maxsize=None)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
  """make_cifar_c.py's disk(): the indicator of x^2 + y^2 <= radius^2 on a
  17 x 17 grid (radius <= 8; else (2 radius + 1)^2), normalized, then
  anti-aliased with OpenCV's GaussianBlur (3 x 3, or 5 x 5 above radius 8,
  sigma alias_blur, BORDER_REFLECT_101). Returns float32 (k, k) summing to 1
  up to rounding."""
  big = radius > 8
  t = np.arange(-radius, radius + 1) if big else np.arange(-8, 9)
  yy, xx = np.meshgrid(t, t)
  disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
  disk /= disk.sum()
  g = _cv2_gaussian_kernel(5 if big else 3, alias_blur)
  m = _ops.filter_matrix(len(t), g, 'reflect101')
  return (m @ disk @ m.T).astype(np.float32)


def _trim_zero_border(kernel: np.ndarray) -> np.ndarray:
  """The kernel without all-zero outer rings (their taps add nothing, so
  REFLECT_101 padding by the smaller half-size gives the same sums)."""
  while kernel.shape[0] > 1 and not (
      kernel[0].any() or kernel[-1].any() or kernel[:, 0].any()
      or kernel[:, -1].any()
  ):  # fmt: skip
    kernel = kernel[1:-1, 1:-1]
  return kernel


def depthwise_filter(x: jax.Array, kernel: np.ndarray) -> jax.Array:
  """OpenCV filter2D per channel (correlation, anchor at the centre,
  BORDER_REFLECT_101) of x (b, H, W, C) with an odd square kernel. The
  channels are folded into the batch: XLA:CPU runs a one-channel
  convolution much faster than a grouped one."""
  kernel = _trim_zero_border(np.asarray(kernel))
  k = kernel.shape[0] // 2
  b, h, w, c = x.shape
  planes = x.transpose(0, 3, 1, 2).reshape(b * c, h, w, 1)
  pad = ((0, 0), (k, k), (k, k), (0, 0))
  planes = jnp.pad(planes, pad, mode='reflect')  # numpy 'reflect' = 101
  out = lax.conv_general_dilated(
      planes, jnp.asarray(kernel, x.dtype)[:, :, None, None], (1, 1),
      'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=lax.Precision.HIGHEST,
  )  # fmt: skip
  return out.reshape(b, c, h, w).transpose(0, 2, 3, 1)


def defocus_blur(rng, x, *, radius: float, alias_blur: float):
  """Convolution with an anti-aliased disk of `radius` pixels, clipped
  (make_cifar_c.py defocus_blur)."""
  del rng
  out = depthwise_filter(x, disk_kernel(float(radius), float(alias_blur)))
  return jnp.clip(out, 0.0, 1.0)


# Glass blur.


def glass_offsets(seed, h: int, w: int, max_delta: int, iterations: int):
  """The random moves of glass_blur for one image (seed (2,) uint32): int32
  (iterations, h - 2d, w - 2d, 2) of (dx, dy), each uniform in [-d, d)
  (numpy randint's half-open range, as the reference draws them), d =
  max_delta."""
  d = max_delta
  shape = (iterations, h - 2 * d, w - 2 * d, 2)
  return _ops.randint(seed, shape, 0, -d, d)


def glass_source_index(offsets, h: int, w: int, max_delta: int):
  """(h w,) int32: the flat source pixel of each flat output pixel after the
  reference's local "swaps" with these offsets.

  make_cifar_c.py visits h from H - d down to d + 1 and, in each row, w from
  W - d down to d + 1, and runs `x[h, w], x[h', w'] = x[h', w'], x[h, w]`
  with (h', w') = (h + dy, w + dx). On an (H, W, 3) numpy array the
  right-hand side holds views, so this copies x[h', w'] into x[h, w] and
  leaves x[h', w'] as it was: a sequential copy, not a swap. CIFAR-10-C was
  made that way, so it is reproduced here. With d = 1 (all CIFAR-10-C
  severities) every source lies at or before its target in the visiting
  order and one iteration is a single gather; larger d runs the copies in
  order in a fori_loop.
  """
  d = max_delta
  iters, nh, nw, _ = offsets.shape
  hh = (h - d - jnp.arange(nh))[:, None]
  ww = (w - d - jnp.arange(nw))[None, :]
  target = (hh * w + ww).reshape(-1)
  src = jnp.arange(h * w, dtype=jnp.int32)
  for it in range(iters):
    dx, dy = offsets[it, ..., 0], offsets[it, ..., 1]
    source = ((hh + dy) * w + (ww + dx)).reshape(-1)
    if d == 1:
      src = src.at[target].set(src[source])
    else:

      def body(t, s, target=target, source=source):
        return s.at[target[t]].set(s[source[t]])

      src = lax.fori_loop(0, nh * nw, body, src)
  return src


def glass_blur_from_offsets(x, offsets, *, sigma: float, max_delta: int):
  """glass_blur given the offsets (b, iterations, H - 2d, W - 2d, 2)."""
  b, h, w, c = x.shape
  y = _ops.gaussian_blur(x, sigma, 4.0, 'nearest')
  y = jnp.floor(y * 255.0) / 255.0  # the reference's np.uint8(... * 255)
  src = jax.vmap(lambda o: glass_source_index(o, h, w, max_delta))(offsets)
  y = jnp.take_along_axis(y.reshape(b, h * w, c), src[..., None], axis=1)
  y = _ops.gaussian_blur(y.reshape(b, h, w, c), sigma, 4.0, 'nearest')
  return jnp.clip(y, 0.0, 1.0)


def glass_blur(rng, x, *, sigma: float, max_delta: int, iterations: int):
  """make_cifar_c.py glass_blur: Gaussian blur (skimage, mode 'nearest',
  truncate 4), quantize to uint8, move pixels locally (glass_source_index),
  blur again, clip. sigma in pixels, max_delta in pixels."""
  b, h, w, _ = x.shape
  offsets = jax.vmap(lambda s: glass_offsets(s, h, w, max_delta, iterations))(
      _ops.image_seeds(rng, b)
  )
  return glass_blur_from_offsets(x, offsets, sigma=sigma, max_delta=max_delta)


# Motion blur.


def motion_blur_at(x, angles, *, radius, sigma):
  """Motion blur of x (b, H, W, C) along angles (b,) in degrees; radius
  and sigma in pixels (both may be traced).

  ImageMagick's MotionBlurImage (which make_cifar_c.py calls through Wand):
  width 2 ceil(radius) + 1, weights k_i = exp(-i^2 / (2 sigma^2)) for i <
  width, normalized, and out[y, x] = sum_i k_i img[y + ceil(i sin a - 0.5),
  x + ceil(i cos a - 0.5)], edge pixels repeated outside the image.
  imagecorruptions reimplements the same sum in numpy but stops it once an
  offset reaches the image size; ImageMagick (and this function) keeps the
  edge pixels. No clipping (the weights sum to 1).
  """
  h, w = x.shape[1], x.shape[2]
  width = 2 * jnp.ceil(radius).astype(jnp.int32) + 1

  def one(img, angle):
    a = jnp.deg2rad(angle)
    sin, cos = jnp.sin(a), jnp.cos(a)

    def body(i, carry):
      acc, norm = carry
      fi = i.astype(img.dtype)
      k = jnp.exp(-fi * fi / (2.0 * sigma * sigma))
      oy = jnp.ceil(fi * sin - 0.5).astype(jnp.int32)
      ox = jnp.ceil(fi * cos - 0.5).astype(jnp.int32)
      rows = jnp.clip(jnp.arange(h) + oy, 0, h - 1)
      cols = jnp.clip(jnp.arange(w) + ox, 0, w - 1)
      return acc + k * img[rows][:, cols], norm + k

    acc, norm = lax.fori_loop(
        0, width, body, (jnp.zeros_like(img), jnp.zeros((), img.dtype))
    )
    return acc / norm

  return jax.vmap(one)(x, angles)


def motion_blur(rng, x, *, radius: float, sigma: float, max_angle=45.0):
  """make_cifar_c.py motion_blur: ImageMagick motion blur (radius and sigma
  in pixels) along an angle uniform in [-max_angle, max_angle) degrees."""
  angles = jax.vmap(lambda s: _ops.uniform(s, (), 0, -max_angle, max_angle))(
      _ops.image_seeds(rng, x.shape[0])
  )
  out = motion_blur_at(x, angles, radius=radius, sigma=sigma)
  return jnp.clip(out, 0.0, 1.0)


# Zoom blur.


def zoom_blur(rng, x, *, zooms):
  """make_cifar_c.py zoom_blur: the mean of x and its clipped zooms by each
  factor in `zooms` (a tuple, e.g. np.arange(1, 1.11, 0.01)), clipped."""
  del rng
  h, w = x.shape[1], x.shape[2]
  zh = np.stack([_ops.clipped_zoom_matrix(h, float(z)) for z in zooms])
  zw = np.stack([_ops.clipped_zoom_matrix(w, float(z)) for z in zooms])

  def body(acc, mats):
    a, b = mats
    return acc + _ops.separable(a, b, x), None

  out, _ = lax.scan(body, x, (jnp.asarray(zh), jnp.asarray(zw)))
  return jnp.clip(out / (len(zooms) + 1), 0.0, 1.0)
