"""Weather corruptions: snow, frost, fog.

Each takes (rng, x) with x float (b, H, W, 3) in [0, 1] and returns the same
shape in [0, 1]; image i draws from fold_in(rng, i). Frost reads the frost
photographs from a folder the user names (they are not shipped here).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.corruptions import _ops
from jaxadv.corruptions import blur

# Fog.


def plasma_draw_shapes(mapsize: int):
  """The shapes of the uniform draws of plasma_fractal, in draw order:
  per level (stride mapsize, mapsize / 2, ..., 2) one (k, k) for the squares
  and two (k, k) for the diamonds, k = mapsize / stride."""
  shapes, step = [], mapsize
  while step >= 2:
    k = mapsize // step
    shapes += [(k, k)] * 3
    step //= 2
  return shapes


def plasma_levels(mapsize: int) -> int:
  return int(mapsize).bit_length() - 1


def plasma_level_uniforms(uniforms, mapsize: int) -> np.ndarray:
  """The reference's draws (a list of plasma_draw_shapes(mapsize) arrays,
  numpy) placed at the pixels they fill: (levels, mapsize, mapsize)."""
  n = mapsize
  out = np.zeros((plasma_levels(n), n, n), np.float32)
  draws = iter(uniforms)
  for level in range(plasma_levels(n)):
    step = n >> level
    half = step // 2
    for rows, cols in ((half, half), (0, half), (half, 0)):
      out[level, rows::step, cols::step] = next(draws)
  return out


def plasma_from_level_uniforms(u, mapsize: int, decay):
  """make_cifar_c.py's plasma_fractal (diamond-square, after FLHerne's
  mapgen) given its uniform draws u (levels, mapsize, mapsize) in [0, 1)
  at the pixels each level fills (plasma_level_uniforms). Returns
  (mapsize, mapsize) in [0, 1].

  Level l has stride s = mapsize / 2^l and h = s / 2: the square centres
  (h, h mod s) get the mean of their 4 diagonal neighbours at distance h,
  then the diamond points (0, h and h, 0 mod s) the mean of their 4 axis
  neighbours (wrapping around, as the reference's np.roll), each plus
  wibble * U(-wibble, wibble) (the reference scales by wibble twice), with
  wibble = 100 / decay^l. The reference works on strided views; this runs
  the same arithmetic at full resolution in one fori_loop over the levels.
  """
  n = mapsize
  r = jnp.arange(n)[:, None]
  c = jnp.arange(n)[None, :]

  def level(lv, m):
    step = jnp.right_shift(n, lv)
    h = step // 2
    wibble = 100.0 / decay ** lv.astype(jnp.float32)
    noise = wibble * (-wibble + 2.0 * wibble * u[lv])
    diag = sum(
        jnp.roll(m, (a * h, b * h), axis=(0, 1))
        for a in (-1, 1)
        for b in (-1, 1)
    )
    centre = (r % step == h) & (c % step == h)
    m = jnp.where(centre, diag / 4 + noise, m)
    cross = sum(jnp.roll(m, a * h, axis=ax) for a in (-1, 1) for ax in (0, 1))
    diamond = ((r % step == 0) & (c % step == h)) | (
        (r % step == h) & (c % step == 0)
    )
    return jnp.where(diamond, cross / 4 + noise, m)

  m = jax.lax.fori_loop(
      0, plasma_levels(n), level, jnp.zeros((n, n), jnp.float32)
  )
  m = m - m.min()
  return m / m.max()


def plasma_fractal(seed, mapsize: int, decay):
  """A random plasma map (mapsize, mapsize) in [0, 1] (mapsize a power of
  2) from one image's seed (2,) uint32, see plasma_from_level_uniforms."""
  shape = (plasma_levels(mapsize), mapsize, mapsize)
  return plasma_from_level_uniforms(
      _ops.uniform(seed, shape, 0), mapsize, decay
  )


def fog_with_map(x, noise_map, *, strength: float):
  """make_cifar_c.py fog given the map (b, H, W) in [0, 1]: x + strength
  map, rescaled by m / (m + strength) with m the image's maximum, clipped."""
  top = jnp.max(x, axis=(1, 2, 3), keepdims=True)
  out = (x + strength * noise_map[..., None]) * top / (top + strength)
  return jnp.clip(out, 0.0, 1.0)


def fog(rng, x, *, strength: float, decay: float):
  """Fog: a plasma fractal of size the next power of two >= max(H, W) (32
  for CIFAR, as make_cifar_c.py), its top-left H x W added (fog_with_map)."""
  b, h, w, _ = x.shape
  size = 1 << (max(h, w) - 1).bit_length()
  maps = jax.vmap(lambda k: plasma_fractal(k, size, decay))(
      _ops.image_seeds(rng, b)
  )
  return fog_with_map(x, maps[:, :h, :w], strength=strength)


# Snow.


def snow_from_draws(x, normal, angles, *, loc, scale, zoom, threshold,
                    blur_radius, blur_sigma, mix):  # fmt: skip
  """make_cifar_c.py snow given its draws: normal (b, H, W) N(0, 1) and
  angles (b,) in degrees.

  The snow layer is loc + scale normal, zoomed by `zoom` (clipped_zoom),
  zero below `threshold`, stored as uint8 (floored, as the reference's PIL
  'L' image), motion blurred (blur_radius, blur_sigma, ImageMagick) and
  stored as uint8 again (rounded). The image is whitened: mix x + (1 - mix)
  max(x, 1.5 luma(x) + 0.5); the layer and its 180-degree rotation are
  added; clipped.
  """
  h, w = x.shape[1], x.shape[2]
  layer = loc + scale * normal[..., None]
  layer = _ops.separable(
      _ops.clipped_zoom_matrix(h, float(zoom)),
      _ops.clipped_zoom_matrix(w, float(zoom)),
      layer,
  )
  layer = jnp.where(layer < threshold, 0.0, layer)
  layer = jnp.floor(jnp.clip(layer, 0.0, 1.0) * 255.0) / 255.0
  layer = blur.motion_blur_at(
      layer, angles, radius=blur_radius, sigma=blur_sigma
  )
  layer = jnp.round(layer * 255.0) / 255.0
  bright = jnp.maximum(x, _ops.luma(x) * 1.5 + 0.5)
  x = mix * x + (1 - mix) * bright
  return jnp.clip(x + layer + layer[:, ::-1, ::-1], 0.0, 1.0)


def snow(rng, x, *, loc, scale, zoom, threshold, blur_radius, blur_sigma,
         mix, min_angle=-135.0, max_angle=-45.0):  # fmt: skip
  """Snow (make_cifar_c.py): see snow_from_draws; the blur angle is uniform
  in [min_angle, max_angle) degrees."""
  b, h, w, _ = x.shape
  seeds = _ops.image_seeds(rng, b)
  normal = jax.vmap(lambda s: _ops.normal(s, (h, w), 0))(seeds)
  angles = jax.vmap(lambda s: _ops.uniform(s, (), 1, min_angle, max_angle))(
      seeds
  )
  return snow_from_draws(
      x, normal, angles, loc=loc, scale=scale, zoom=zoom,
      threshold=threshold, blur_radius=blur_radius, blur_sigma=blur_sigma,
      mix=mix,
  )  # fmt: skip


# Frost.

# The files make_cifar_c.py lists; np.random.randint(5) picks among the
# first five, so frost6.jpg is never used.
FROST_FILES = ('frost1.png', 'frost2.png', 'frost3.png', 'frost4.jpg',
               'frost5.jpg')  # fmt: skip
FROST_ENV = 'JAXADV_FROST_DIR'


def find_frost_dir(frost_dir=None) -> str:
  """The folder of the frost photographs: `frost_dir`, else $JAXADV_FROST_DIR,
  else the `frost/` folder of an installed imagecorruptions package (found
  without importing it). ValueError in one line if none holds them."""
  candidates = [frost_dir, os.environ.get(FROST_ENV)]
  if frost_dir is None and not candidates[1]:
    import importlib.util  # pylint: disable=g-import-not-at-top

    spec = importlib.util.find_spec('imagecorruptions')
    if spec is not None and spec.submodule_search_locations:
      candidates.append(
          os.path.join(list(spec.submodule_search_locations)[0], 'frost')
      )
  for folder in candidates:
    if folder and all(
        os.path.isfile(os.path.join(folder, f)) for f in FROST_FILES
    ):
      return folder
  where = frost_dir or os.environ.get(FROST_ENV) or 'no folder given'
  raise ValueError(
      f'frost needs the photographs {", ".join(FROST_FILES)} ({where}); '
      f'pass frost_dir= or set {FROST_ENV} to a folder holding them (e.g. '
      'the frost/ folder of `pip install imagecorruptions`)'
  )


def _cv2_linear_resize(img: np.ndarray, scale: float) -> np.ndarray:
  """OpenCV's resize(img, (0, 0), fx=scale, fy=scale) with INTER_LINEAR
  (half-pixel centres, edge clamp), in float then rounded to uint8. Exact
  for scale 0.2, where every output pixel is the input pixel 5 i + 2."""
  out = []
  for axis in (0, 1):
    n = img.shape[axis]
    m = int(np.rint(n * scale))
    pos = np.clip((np.arange(m) + 0.5) / scale - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    a = np.zeros((m, n))
    np.add.at(a, (np.arange(m), lo), 1 - (pos - lo))
    np.add.at(a, (np.arange(m), hi), pos - lo)
    out.append(a)
  res = np.einsum('ik,klc->ilc', out[0], img.astype(np.float64))
  res = np.einsum('ilc,jl->ijc', res, out[1])
  return np.clip(np.rint(res), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def load_frost(frost_dir: str, scale: float):
  """The five frost photographs as RGB uint8, resized by `scale` (OpenCV
  INTER_LINEAR, as make_cifar_c.py's 0.2), zero-padded to a common size.
  Returns (stack (5, Hm, Wm, 3) uint8, sizes (5, 2) int32)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  imgs = []
  for name in FROST_FILES:
    with Image.open(os.path.join(frost_dir, name)) as im:
      rgb = np.asarray(im.convert('RGB'))  # drops alpha, as cv2.imread
    imgs.append(_cv2_linear_resize(rgb, scale))
  sizes = np.array([i.shape[:2] for i in imgs], np.int32)
  stack = np.zeros((len(imgs), *sizes.max(0), 3), np.uint8)
  for k, im in enumerate(imgs):
    stack[k, : im.shape[0], : im.shape[1]] = im
  return stack, sizes


def frost(rng, x, *, image_weight, frost_weight, frost_scale=0.2,
          frost_dir=None):  # fmt: skip
  """make_cifar_c.py frost: image_weight x + frost_weight crop, clipped,
  where crop is an H x W window of one of the five photographs (resized by
  frost_scale), photograph and window uniform (the window's start in [0,
  size - H) as numpy's randint). See find_frost_dir for frost_dir."""
  b, h, w, _ = x.shape
  stack, sizes = load_frost(find_frost_dir(frost_dir), float(frost_scale))
  small = sizes.min(0)
  if small[0] <= h or small[1] <= w:
    raise ValueError(
        f'frost photographs resized by frost_scale={frost_scale} are '
        f'{small[0]}x{small[1]} at the smallest, not larger than the '
        f'{h}x{w} images; raise frost_scale'
    )
  stack_j, sizes_j = jnp.asarray(stack), jnp.asarray(sizes)

  def crop(seed):
    idx = _ops.randint(seed, (), 0, 0, len(FROST_FILES))
    y0 = _ops.randint(seed, (), 1, 0, sizes_j[idx, 0] - h)
    x0 = _ops.randint(seed, (), 2, 0, sizes_j[idx, 1] - w)
    return jax.lax.dynamic_slice(stack_j[idx], (y0, x0, 0), (h, w, 3))

  crops = jax.vmap(crop)(_ops.image_seeds(rng, b)).astype(x.dtype) / 255.0
  return jnp.clip(image_weight * x + frost_weight * crops, 0.0, 1.0)
