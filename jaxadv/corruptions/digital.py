"""Digital corruptions: brightness, contrast, elastic_transform, pixelate
(jpeg_compression has its own module).

Each takes (rng, x) with x float (b, H, W, C) in [0, 1] and returns the same
shape in [0, 1]; image i draws from fold_in(rng, i).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.corruptions import _ops


def brightness(rng, x, *, delta: float):
  """HSV value + delta, clipped to 1 (make_cifar_c.py brightness, through
  skimage rgb2hsv/hsv2rgb). With hue and saturation fixed every channel is
  proportional to the value V = max(R, G, B), so this is x min(V + delta,
  1) / V, and grey min(delta, 1) where V = 0 (skimage sets S = 0 there)."""
  del rng
  v = jnp.max(x, axis=-1, keepdims=True)
  v_new = jnp.minimum(v + delta, 1.0)
  safe = jnp.where(v > 0, v, 1.0)
  out = jnp.where(v > 0, x * (v_new / safe), v_new)
  return jnp.clip(out, 0.0, 1.0)


def contrast(rng, x, *, factor: float):
  """(x - m) factor + m with m each channel's mean over the image, clipped
  (make_cifar_c.py contrast)."""
  del rng
  m = jnp.mean(x, axis=(1, 2), keepdims=True)
  return jnp.clip((x - m) * factor + m, 0.0, 1.0)


def pixelate(rng, x, *, factor: float):
  """Pillow resize down to int(factor H) x int(factor W) with Image.BOX and
  back up with Image.BOX (make_cifar_c.py pixelate; imagecorruptions uses
  NEAREST on the way up, which for these sizes picks the same pixels). In
  real arithmetic: Pillow rounds to uint8 after each pass."""
  del rng
  h, w = x.shape[1], x.shape[2]
  sh, sw = int(h * factor), int(w * factor)
  ah = _ops.pil_box_matrix(sh, h) @ _ops.pil_box_matrix(h, sh)
  aw = _ops.pil_box_matrix(sw, w) @ _ops.pil_box_matrix(w, sw)
  return jnp.clip(_ops.separable(ah, aw, x), 0.0, 1.0)


# Elastic transform.


def elastic_anchor_points(h: int, w: int) -> np.ndarray:
  """The three points (3, 2) the reference's random affine moves: the
  corners of a square of half-side min(h, w) // 3 around (h // 2, w // 2),
  read by OpenCV as (x, y) pairs (as make_cifar_c.py writes them)."""
  c = np.float32([h, w]) // 2
  s = min(h, w) // 3
  return np.float32([c + s, [c[0] + s, c[1] - s], c - s])


def _inverse3(m):
  """The inverse of a 3 x 3 matrix by cofactors (cheaper to compile than
  jnp.linalg.solve's LU, and exact enough for three anchor points)."""
  cof = jnp.stack(
      [jnp.cross(m[(i + 1) % 3], m[(i + 2) % 3]) for i in range(3)]
  )  # rows of the cofactor matrix
  return cof.T / jnp.dot(m[0], cof[0])


def affine_warp(img, src_pts, dst_pts):
  """OpenCV warpAffine(img, getAffineTransform(src_pts, dst_pts)) with
  INTER_LINEAR and BORDER_REFLECT_101: out(p) = img(A p) with A the affine
  map taking dst_pts to src_pts (points (x, y)). img (H, W, C). Source
  coordinates are exact, as OpenCV 5 computes them for float images
  (tested); OpenCV 3/4, which made CIFAR-10-C, rounded them to 1/32 pixel
  (INTER_BITS = 5), a difference of at most 1/64 pixel."""
  h, w = img.shape[0], img.shape[1]
  p = jnp.concatenate([dst_pts, jnp.ones((3, 1), dst_pts.dtype)], axis=1)
  a = (_inverse3(p) @ src_pts).T  # (2, 3): (x, y, 1) -> source (x, y)
  yy, xx = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing='ij')
  sx = a[0, 0] * xx + a[0, 1] * yy + a[0, 2]
  sy = a[1, 0] * xx + a[1, 1] * yy + a[1, 2]
  return _ops.bilinear_sample(img, sy, sx, 'reflect101')


def elastic_from_draws(x, moves, ux, uy, *, alpha, sigma):
  """make_cifar_c.py elastic_transform given its draws: moves (b, 3, 2) of
  the affine's anchor points (pixels), ux, uy (b, H, W) in [-1, 1).

  Warp by the affine (affine_warp), then displace by (dx, dy) = alpha
  gaussian(u, sigma) (skimage: mode 'reflect', truncate 3; pixels) with
  scipy's map_coordinates(order=1, mode='reflect'), clip."""
  b, h, w, c = x.shape
  pts = jnp.asarray(elastic_anchor_points(h, w))
  x = jax.vmap(lambda img, mv: affine_warp(img, pts, pts + mv))(x, moves)
  gh = _ops.gaussian_matrix_traced(h, sigma, 3.0, 'reflect')
  gw = _ops.gaussian_matrix_traced(w, sigma, 3.0, 'reflect')
  dx = alpha * _ops.separable(gh, gw, ux[..., None])[..., 0]
  dy = alpha * _ops.separable(gh, gw, uy[..., None])[..., 0]
  yy, xx = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing='ij')
  out = jax.vmap(
      lambda img, ddy, ddx: _ops.bilinear_sample(
          img, yy + ddy, xx + ddx, 'reflect'
      )
  )(x, dy, dx)
  return jnp.clip(out, 0.0, 1.0)


def elastic_transform(rng, x, *, alpha, sigma, affine):
  """Elastic transform (make_cifar_c.py): anchor points moved uniformly in
  [-affine, affine) pixels, then a smooth displacement field of amplitude
  alpha pixels and smoothness sigma pixels (see elastic_from_draws)."""
  b, h, w, _ = x.shape
  seeds = _ops.image_seeds(rng, b)
  moves = jax.vmap(lambda s: _ops.uniform(s, (3, 2), 0, -affine, affine))(seeds)
  ux = jax.vmap(lambda s: _ops.uniform(s, (h, w), 1, -1.0, 1.0))(seeds)
  uy = jax.vmap(lambda s: _ops.uniform(s, (h, w), 2, -1.0, 1.0))(seeds)
  return elastic_from_draws(x, moves, ux, uy, alpha=alpha, sigma=sigma)
