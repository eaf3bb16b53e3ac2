"""CIFAR-10-C common corruptions (Hendrycks & Dietterich 2019) as pure,
jit-able JAX functions on the device.

    from jaxadv import corruptions
    x_c = corruptions.corrupt('fog', 3, rng, x)  # x float (b, H, W, C) in [0, 1]

All 15 corruptions of the benchmark are here, in its order (`CORRUPTIONS`):
gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur,
motion_blur, zoom_blur, snow, frost, fog, brightness, contrast,
elastic_transform, pixelate, jpeg_compression. Their parameters at
severities 1..5 (`CIFAR10_C`, `params(name, severity)`) are those of
make_cifar_c.py (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py),
which made CIFAR-10-C; each function follows that script's code path, and
each docstring says where it follows or departs from it. The functions take
their parameters as keywords, so other parameter sets (the ImageNet-C ones
of the `imagecorruptions` package, say) run through the same code.

Conventions:
- `corrupt(name, severity, rng, x)` returns an array of x's shape and dtype
  with pixels in [0, 1]. Image i of a batch draws its randomness from
  jax.random.fold_in(rng, i): the same key gives the same images, and a
  batch's corruption does not depend on its size. Give every batch its own
  key (fold in the batch index). The per-pixel numbers come from a
  counter-based hash seeded by that key (see _ops: threefry draws of image
  size take seconds to compile on CPU), so they are the same on every
  backend; they are of course not CIFAR-10-C's numpy draws.
- Computation is float32. Parameters that fix shapes or host-built
  operators (kernel sizes, zoom and resize matrices: `STATIC_PARAMS`) are
  static, the others are traced, so `corrupt` compiles once per corruption
  and shape for most corruptions (up to 5 times for the rest), and can be
  called inside a jitted function.
- Channels: C = 3 (RGB) is the benchmark. C = 1 works too: the per-channel
  corruptions apply to the single channel; the colour ones (brightness,
  snow, frost, jpeg_compression) run on the grey image repeated to RGB and
  return the BT.601 luma of the result (for jpeg_compression and brightness
  this is exactly the grey image's result). Other C are an error.
- CIFAR-10-C stores np.uint8(result) (floored to 8 bits); these functions
  return the unquantized floats (JPEG's output is 8-bit by nature).
- frost needs the five frost photographs of the reference (frost1.png ..
  frost5.jpg), which are not shipped here: hendrycks/robustness and the
  `imagecorruptions` package (both Apache-2.0) carry them, but neither says
  where the photographs come from or under which terms. Pass frost_dir= to
  `corrupt`, or set $JAXADV_FROST_DIR, or `pip install imagecorruptions`,
  whose frost/ folder is then found without importing the package.

`apply(name, rng, x, **params)` runs a corruption with any parameters.
`metrics` has the report's numbers: mean corruption accuracy and
Hendrycks' mCE and relative mCE against a baseline model.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import errors
from jaxadv.corruptions import _ops
from jaxadv.corruptions import metrics
from jaxadv.corruptions import weather
from jaxadv.corruptions.blur import defocus_blur
from jaxadv.corruptions.blur import glass_blur
from jaxadv.corruptions.blur import motion_blur
from jaxadv.corruptions.blur import zoom_blur
from jaxadv.corruptions.digital import brightness
from jaxadv.corruptions.digital import contrast
from jaxadv.corruptions.digital import elastic_transform
from jaxadv.corruptions.digital import pixelate
from jaxadv.corruptions.jpeg import jpeg_compression
from jaxadv.corruptions.metrics import corruption_errors
from jaxadv.corruptions.metrics import mce
from jaxadv.corruptions.metrics import mean_corruption_accuracy
from jaxadv.corruptions.metrics import relative_mce
from jaxadv.corruptions.noise import gaussian_noise
from jaxadv.corruptions.noise import impulse_noise
from jaxadv.corruptions.noise import shot_noise
from jaxadv.corruptions.weather import fog
from jaxadv.corruptions.weather import frost
from jaxadv.corruptions.weather import snow

SEVERITIES = (1, 2, 3, 4, 5)


def _rows(keys, *values):
  """One dict per severity from per-key lists of 5 values."""
  return tuple(dict(zip(keys, v)) for v in zip(*values))


def _zooms(stop):
  # np.arange(1, stop, 0.01) as make_cifar_c.py writes it; float steps make
  # the first list end at 1.06 (7 factors) and the others just below stop.
  return tuple(float(z) for z in np.arange(1, stop, 0.01))


_S = 32  # make_cifar_c.py's IMSIZE: elastic_transform is in pixels of 32.

# make_cifar_c.py's `c = [...]` lists, severity 1..5, by function.
CIFAR10_C = {
    'gaussian_noise': _rows(('sigma',), [0.04, 0.06, 0.08, 0.09, 0.10]),
    'shot_noise': _rows(('rate',), [500, 250, 100, 75, 50]),
    'impulse_noise': _rows(('amount',), [0.01, 0.02, 0.03, 0.05, 0.07]),
    'defocus_blur': _rows(
        ('radius', 'alias_blur'),
        [0.3, 0.4, 0.5, 1, 1.5], [0.4, 0.5, 0.6, 0.2, 0.1],
    ),
    'glass_blur': _rows(
        ('sigma', 'max_delta', 'iterations'),
        [0.05, 0.25, 0.4, 0.25, 0.4], [1, 1, 1, 1, 1], [1, 1, 1, 2, 2],
    ),
    'motion_blur': _rows(
        ('radius', 'sigma'), [6, 6, 6, 8, 9], [1, 1.5, 2, 2, 2.5]
    ),
    'zoom_blur': _rows(
        ('zooms',), [_zooms(s) for s in (1.06, 1.11, 1.16, 1.21, 1.26)]
    ),
    'snow': _rows(
        ('loc', 'scale', 'zoom', 'threshold', 'blur_radius', 'blur_sigma',
         'mix'),
        [0.1, 0.1, 0.15, 0.25, 0.3], [0.2, 0.2, 0.3, 0.3, 0.3],
        [1, 1, 1.75, 2.25, 1.25], [0.6, 0.5, 0.55, 0.6, 0.65],
        [8, 10, 10, 12, 14], [3, 4, 4, 6, 12], [0.95, 0.9, 0.9, 0.85, 0.8],
    ),
    'frost': _rows(
        ('image_weight', 'frost_weight', 'frost_scale'),
        [1, 1, 0.9, 0.85, 0.75], [0.2, 0.3, 0.4, 0.4, 0.45], [0.2] * 5,
    ),
    'fog': _rows(
        ('strength', 'decay'), [0.2, 0.5, 0.75, 1, 1.5], [3, 3, 2.5, 2, 1.75]
    ),
    'brightness': _rows(('delta',), [0.05, 0.1, 0.15, 0.2, 0.3]),
    'contrast': _rows(('factor',), [0.75, 0.5, 0.4, 0.3, 0.15]),
    'elastic_transform': _rows(
        ('alpha', 'sigma', 'affine'),
        [_S * 0, _S * 0.05, _S * 0.08, _S * 0.1, _S * 0.1],
        [_S * 0, _S * 0.2, _S * 0.06, _S * 0.04, _S * 0.03],
        [_S * 0.08, _S * 0.07, _S * 0.06, _S * 0.05, _S * 0.03],
    ),
    'pixelate': _rows(('factor',), [0.95, 0.9, 0.85, 0.75, 0.65]),
    'jpeg_compression': _rows(('quality',), [80, 65, 58, 50, 40]),
}  # fmt: skip

# name -> (function, needs RGB); the order of the benchmark.
REGISTRY = {
    'gaussian_noise': (gaussian_noise, False),
    'shot_noise': (shot_noise, False),
    'impulse_noise': (impulse_noise, False),
    'defocus_blur': (defocus_blur, False),
    'glass_blur': (glass_blur, False),
    'motion_blur': (motion_blur, False),
    'zoom_blur': (zoom_blur, False),
    'snow': (snow, True),
    'frost': (frost, True),
    'fog': (fog, False),
    'brightness': (brightness, True),
    'contrast': (contrast, False),
    'elastic_transform': (elastic_transform, False),
    'pixelate': (pixelate, False),
    'jpeg_compression': (jpeg_compression, True),
}
# The parameters that must be Python values (they fix shapes or are used on
# the host); the others are passed traced, so the severities of a corruption
# share one compiled program where these agree.
STATIC_PARAMS = {
    'defocus_blur': ('radius', 'alias_blur'),
    'glass_blur': ('max_delta', 'iterations'),
    'zoom_blur': ('zooms',),
    'snow': ('zoom',),
    'frost': ('frost_scale', 'frost_dir'),
    'pixelate': ('factor',),
}
CORRUPTIONS = tuple(REGISTRY)


def check_name(name) -> str:
  """`name` if it is a corruption, else ConfigError listing the valid ones."""
  if name not in REGISTRY:
    raise errors.ConfigError(
        f'unknown corruption {name!r}; valid: {", ".join(CORRUPTIONS)}'
    )
  return name


def check_severity(severity) -> int:
  """`severity` if it is an int in 1..5, else a one-line ValueError."""
  if (
      isinstance(severity, bool)
      or not isinstance(severity, (int, np.integer))
      or not 1 <= severity <= 5
  ):
    raise ValueError(
        f'corruption severity must be an integer in 1..5, got {severity!r}'
    )
  return int(severity)


def get(name: str):
  """The corruption function fn(rng, x, **params) of `name`."""
  return REGISTRY[check_name(name)][0]


def params(name: str, severity: int) -> dict:
  """The CIFAR-10-C parameters (a new dict) of `name` at `severity`."""
  return dict(CIFAR10_C[check_name(name)][check_severity(severity) - 1])


def _check_images(x):
  shape = getattr(x, 'shape', None)
  if shape is None or len(shape) != 4 or shape[-1] not in (1, 3):
    raise ValueError(
        'corruptions take images x of shape (b, H, W, C) with C = 3 or 1, '
        f'got shape {shape}'
    )
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
        f'corruptions take float images in [0, 1], got dtype {x.dtype}'
    )


@functools.lru_cache(maxsize=None)
def _compiled(name, static, grey):
  fn, colour = REGISTRY[name]

  def run(rng, x, dynamic):
    x32 = x.astype(jnp.float32)
    if grey and colour:
      rgb = jnp.repeat(x32, 3, axis=-1)
      out = fn(rng, rgb, **dict(static), **dynamic)
      out = jnp.clip(_ops.luma(out), 0.0, 1.0)
    else:
      out = fn(rng, x32, **dict(static), **dynamic)
    return out.astype(x.dtype)

  return jax.jit(run)


def corrupt(name: str, severity: int, rng: jax.Array, x: jax.Array, *,
            frost_dir: str | None = None) -> jax.Array:  # fmt: skip
  """Corruption `name` at CIFAR-10-C `severity` (1..5) of images x (b, H, W,
  C) float in [0, 1] (C = 3, or 1: see the module docstring), seeded by
  `rng`. Returns x's shape and dtype, pixels in [0, 1]. frost_dir: the
  folder of the frost photographs (frost only; see weather.find_frost_dir).
  """
  kwargs = params(name, severity)
  if name == 'frost':
    kwargs['frost_dir'] = frost_dir
  return apply(name, rng, x, **kwargs)


def apply(name: str, rng: jax.Array, x: jax.Array, **kwargs) -> jax.Array:
  """Corruption `name` with explicit parameters (the keywords of its
  function, e.g. apply('fog', rng, x, strength=1.5, decay=2)); otherwise
  as `corrupt`, sharing its compiled programs."""
  fn = get(name)
  _check_images(x)
  sig = inspect.signature(fn).parameters.values()
  accepted = {p.name for p in sig if p.kind == p.KEYWORD_ONLY}
  required = {
      p.name for p in sig if p.kind == p.KEYWORD_ONLY and p.default is p.empty
  }
  if not required <= kwargs.keys() <= accepted:
    raise ValueError(
        f'{name} takes parameters {sorted(accepted)} (required '
        f'{sorted(required)}), got {sorted(kwargs)}'
    )
  if name == 'frost':  # fails before compiling if the photographs are absent
    kwargs['frost_dir'] = weather.find_frost_dir(kwargs.get('frost_dir'))
  static_keys = STATIC_PARAMS.get(name, ())
  static = tuple((k, kwargs[k]) for k in static_keys if k in kwargs)
  dynamic = {
      k: jnp.asarray(v) for k, v in kwargs.items() if k not in static_keys
  }
  return _compiled(name, static, x.shape[-1] == 1)(rng, x, dynamic)
