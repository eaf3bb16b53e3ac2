"""Device-side preprocessing (pure, jit-able): uint8 pixels to float32 in
[0, 1], and the train augmentation, applied with the same crop and flip to
every image-shaped feature of a batch (multi-task targets move with the
image). Normalization (mean/std) belongs to the model, so attacks work in
[0, 1].
"""

import jax
from jax import lax
import jax.numpy as jnp

from jaxadv.data.info import AUGMENTATIONS


def to_float(images: jax.Array) -> jax.Array:
  """uint8 0..255 -> float32 in [0, 1]; float input is assumed in [0, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def crop_offsets(rng: jax.Array, batch: int, pad: int = 4) -> jax.Array:
  """Per-example (top, left) offsets of a random crop: int32 (b, 2)."""
  return jax.random.randint(rng, (batch, 2), 0, 2 * pad + 1)


def crop_at(images: jax.Array, offsets: jax.Array, pad: int = 4) -> jax.Array:
  """The HxW crop at `offsets` of each example zero-padded by `pad`."""
  b, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crop = lambda img, o: lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def random_crop(rng: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
  """Per-example random HxW crop of the batch zero-padded by `pad` pixels: (b, H, W, C)."""
  return crop_at(images, crop_offsets(rng, images.shape[0], pad), pad)


def flip_at(images: jax.Array, flip: jax.Array) -> jax.Array:
  """Flips the examples where `flip` (bool (b,)) left-right."""
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_flip(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each example of (b, H, W, C) left-right with probability 0.5."""
  return flip_at(images, jax.random.bernoulli(rng, 0.5, (images.shape[0],)))


def check_kind(kind: str) -> None:
  if kind not in AUGMENTATIONS:
    raise ValueError(
        f'augment kind {kind!r} must be one of {", ".join(AUGMENTATIONS)}'
    )


def augment(
    rng: jax.Array, images: jax.Array, kind: str, pad: int = 4
) -> jax.Array:
  """Train augmentation of a (b, H, W, C) batch: float32 pixels in [0, 1].

  kind: 'none' | 'flip' | 'crop' (random crop with `pad`-pixel zero padding) |
  'crop_flip'. uint8 input is augmented before conversion (cheaper).
  """
  return augment_batch(rng, {'image': images}, kind, ('image',), pad)['image']


def augment_batch(
    rng: jax.Array, batch: dict, kind: str, image_keys=('image',), pad: int = 4
) -> dict:
  """`batch` with the same random crop/flip applied to every feature named
  in `image_keys` (each (b, H, W, C)), those converted to float32 in [0, 1];
  other features unchanged. Keys and draws are those of `augment`, so the
  'image' feature is augmented exactly as `augment` would."""
  check_kind(kind)
  crop_rng, flip_rng = jax.random.split(rng)
  out = dict(batch)
  b = batch[image_keys[0]].shape[0]
  offsets = crop_offsets(crop_rng, b, pad) if 'crop' in kind else None
  flip = jax.random.bernoulli(flip_rng, 0.5, (b,)) if 'flip' in kind else None
  for k in image_keys:
    x = batch[k]
    if offsets is not None:
      x = crop_at(x, offsets, pad)
    if flip is not None:
      x = flip_at(x, flip)
    out[k] = to_float(x)
  return out
