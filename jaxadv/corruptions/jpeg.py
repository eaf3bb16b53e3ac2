"""JPEG compression as a round trip on the device: what Pillow's
`img.save(f, 'JPEG', quality=q)` then `Image.open(f)` does to an RGB image
(make_cifar_c.py jpeg_compression), in JAX.

Pillow hands the work to libjpeg(-turbo) with its defaults, reproduced here:
- 8-bit samples; RGB -> YCbCr (JFIF, full range) with libjpeg's 16-bit
  fixed-point tables, so in exact integer arithmetic;
- 4:2:0 chroma: each 2 x 2 block averaged as libjpeg's h2v2_downsample,
  (sum + bias) >> 2 with bias alternating 1, 2 along a row;
- edges padded by repeating the last row/column to whole 16 x 16 MCUs;
- 8 x 8 DCT (ISLOW) of samples - 128, quantized with the IJG (Annex K) tables scaled
  by libjpeg's jpeg_set_quality (5000 / q below 50, else 200 - 2q; entries
  (t s + 50) // 100 clamped to [1, 255]), rounding half away from zero;
- decoding: dequantize, inverse DCT (ISLOW), + 128, clamp to [0, 255];
  chroma upsampled with libjpeg's "fancy" h2v2 triangle filter (weights 9,
  3, 3, 1 / 16 with its rounding biases 8 and 7); YCbCr -> RGB with the
  fixed-point tables.
The DCT pair is libjpeg's default JDCT_ISLOW in the same integer
arithmetic, so on 8-bit input the whole round trip is integer and should
match Pillow to the bit; tests/test_corruptions.py measures it.
"""

from __future__ import annotations

import functools


import jax.numpy as jnp
import numpy as np

# ITU-T T.81 Annex K.1 quantization tables (natural order), as libjpeg's
# jcparam.c std_luminance_quant_tbl / std_chrominance_quant_tbl.
LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]).reshape(8, 8)  # fmt: skip
CHROMA_TABLE = np.full((8, 8), 99)
CHROMA_TABLE[:4, :4] = [
    [17, 18, 24, 47],
    [18, 21, 26, 66],
    [24, 26, 56, 99],
    [47, 66, 99, 99],
]


def quant_tables(quality):
  """(luma, chroma) int32 (8, 8) tables of libjpeg's jpeg_set_quality(q,
  force_baseline=TRUE), quality in 1..100 (may be traced)."""
  q = jnp.clip(jnp.asarray(quality, jnp.int32), 1, 100)
  scale = jnp.where(q < 50, 5000 // q, 200 - 2 * q)
  return tuple(
      jnp.clip((jnp.asarray(t, jnp.int32) * scale + 50) // 100, 1, 255)
      for t in (LUMA_TABLE, CHROMA_TABLE)
  )


def _fix(v):
  return int(v * 65536 + 0.5)


def rgb_to_ycc(rgb):
  """int32 (..., 3) RGB in [0, 255] -> Y, Cb, Cr int32 (...), libjpeg's
  rgb_ycc_convert."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  half, off = 1 << 15, 128 << 16
  y = (_fix(0.299) * r + _fix(0.587) * g + _fix(0.114) * b + half) >> 16
  cb = (
      -_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + off + half - 1
  ) >> 16
  cr = (
      _fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + off + half - 1
  ) >> 16
  return y, cb, cr


def ycc_to_rgb(y, cb, cr):
  """libjpeg's ycc_rgb_convert: int32 planes -> uint8-valued int32
  (..., 3)."""
  half = 1 << 15
  x_cb, x_cr = cb - 128, cr - 128
  r = y + ((_fix(1.402) * x_cr + half) >> 16)
  b = y + ((_fix(1.772) * x_cb + half) >> 16)
  g = y + ((-_fix(0.34414) * x_cb - _fix(0.71414) * x_cr + half) >> 16)
  return jnp.clip(jnp.stack([r, g, b], axis=-1), 0, 255)


def downsample_h2v2(plane):
  """(b, 2h, 2w) int32 -> (b, h, w): libjpeg's h2v2_downsample."""
  b, hh, ww = plane.shape
  s = plane.reshape(b, hh // 2, 2, ww // 2, 2).sum(axis=(2, 4))
  bias = 1 + (jnp.arange(ww // 2) % 2)  # 1, 2, 1, 2, ... along each row
  return (s + bias) >> 2


def upsample_h2v2_fancy(plane):
  """(b, h, w) int32 -> (b, 2h, 2w): libjpeg's h2v2_fancy_upsample (edge
  rows and columns repeated)."""
  up = jnp.concatenate([plane[:, :1], plane[:, :-1]], axis=1)
  down = jnp.concatenate([plane[:, 1:], plane[:, -1:]], axis=1)
  rows = jnp.stack([3 * plane + up, 3 * plane + down], axis=2)
  rows = rows.reshape(plane.shape[0], -1, plane.shape[2])  # column sums
  left = jnp.concatenate([rows[..., :1], rows[..., :-1]], axis=2)
  right = jnp.concatenate([rows[..., 1:], rows[..., -1:]], axis=2)
  even = (3 * rows + left + 8) >> 4
  odd = (3 * rows + right + 7) >> 4
  return jnp.stack([even, odd], axis=3).reshape(
      rows.shape[0], rows.shape[1], -1
  )


# libjpeg's default "slow integer" DCT pair (JDCT_ISLOW, jfdctint.c and
# jidctint.c): the Loeffler-Ligtenberg-Moschytz factorization with 13-bit
# constants; each 1-D pass scales by sqrt(8), the first keeps 2 extra bits.
# Inside a pass there is no rounding: every output is an integer linear
# combination of the inputs, descaled (rounded right shift) at the end. So
# each pass is an int32 (8, 8) matrix, built here on the host by running the
# flow graph on unit vectors, and a per-output shift; on 8-bit input the
# round trip is libjpeg's to the bit.
_C = dict(
    c0541=4433, c0765=6270, c1847=15137, c1175=9633, c0298=2446,
    c2053=16819, c3072=25172, c1501=12299, c0899=7373, c2562=20995,
    c1961=16069, c0390=3196,
)  # fmt: skip
_CONST_BITS, _PASS1_BITS = 13, 2


def _odd_part(a0, a1, a2, a3):
  """The odd half of both 1-D transforms: inputs (a0, a1, a2, a3) are the
  forward DCT's differences (x3 - x4, x2 - x5, x1 - x6, x0 - x7) or the
  inverse's coefficients (c7, c5, c3, c1); returns the four products."""
  z1, z2, z3, z4 = a0 + a3, a1 + a2, a0 + a2, a1 + a3
  z5 = (z3 + z4) * _C['c1175']
  z1, z2 = z1 * -_C['c0899'], z2 * -_C['c2562']
  z3, z4 = z3 * -_C['c1961'] + z5, z4 * -_C['c0390'] + z5
  return (
      a0 * _C['c0298'] + z1 + z3,
      a1 * _C['c2053'] + z2 + z4,
      a2 * _C['c3072'] + z2 + z3,
      a3 * _C['c1501'] + z1 + z4,
  )


def _fdct_linear(x, first: bool):
  """A forward pass on the rows of numpy int64 (8, 8) before descaling."""
  x = [x[:, i] for i in range(8)]
  s = [x[i] + x[7 - i] for i in range(4)]
  d = [x[i] - x[7 - i] for i in range(4)]
  e0, e3, e1, e2 = s[0] + s[3], s[0] - s[3], s[1] + s[2], s[1] - s[2]
  scale0 = (1 << _PASS1_BITS) if first else 1  # pass 1: exact left shift
  r = (e2 + e3) * _C['c0541']
  o7, o5, o3, o1 = _odd_part(*d[::-1])
  outs = [(e0 + e1) * scale0, o1, r + e3 * _C['c0765'], o3]
  outs += [(e0 - e1) * scale0, o5, r - e2 * _C['c1847'], o7]
  return np.stack(outs, axis=1)


def _idct_linear(c):
  """An inverse pass on the rows of numpy int64 (8, 8) before descaling."""
  c = [c[:, i] for i in range(8)]
  r = (c[2] + c[6]) * _C['c0541']
  t2, t3 = r - c[6] * _C['c1847'], r + c[2] * _C['c0765']
  t0, t1 = (c[0] + c[4]) << _CONST_BITS, (c[0] - c[4]) << _CONST_BITS
  e = (t0 + t3, t1 + t2, t1 - t2, t0 - t3)
  o0, o1, o2, o3 = _odd_part(c[7], c[5], c[3], c[1])
  odd = (o3, o2, o1, o0)
  outs = [e[i] + odd[i] for i in range(4)]
  outs += [e[3 - i] - odd[3 - i] for i in range(4)]
  return np.stack(outs, axis=1)


def _matrix(linear, *args):
  """(8, 8) int32 W with out = W @ in for a pass."""
  return linear(np.eye(8, dtype=np.int64), *args).T.astype(np.int32)


_FDCT_ROWS = _matrix(_fdct_linear, True)
_FDCT_COLS = _matrix(_fdct_linear, False)
_IDCT = _matrix(_idct_linear)
_CB, _P1 = _CONST_BITS, _PASS1_BITS
_FDCT_ROWS_SHIFT = np.array([0, 1, 1, 1, 0, 1, 1, 1]) * (_CB - _P1)
_FDCT_COLS_SHIFT = np.where(np.arange(8) % 4 == 0, _P1, _CB + _P1)


def _descale(v, shift, axis):
  """Rounded right shift of v by `shift` bits (per output index along
  `axis`; 0 leaves the value as it is), libjpeg's DESCALE."""
  shape = [1] * v.ndim
  shape[axis] = 8
  n = jnp.asarray(np.asarray(shift).reshape(shape), jnp.int32)
  half = jnp.where(n > 0, jnp.left_shift(1, jnp.maximum(n - 1, 0)), 0)
  return jnp.right_shift(v + half, n)


def dct_roundtrip(plane, table):
  """Encode and decode the 8 x 8 blocks of an int32 plane (b, 8m, 8n) of
  samples in [0, 255] with quantization `table`: libjpeg's ISLOW forward
  DCT (rows, then columns), quantization (jcdctmgr.c: divide by 8 q,
  rounding half away from zero), dequantization, ISLOW inverse DCT
  (columns, then rows), + 128, clamp. Returns int32 samples in [0, 255]."""
  b, hh, ww = plane.shape
  q = jnp.asarray(table, jnp.int32)
  blk = plane.reshape(b, hh // 8, 8, ww // 8, 8).transpose(0, 1, 3, 2, 4) - 128
  i32 = jnp.int32
  dot = functools.partial(jnp.einsum, preferred_element_type=i32)
  coef = _descale(dot('...rc,kc->...rk', blk, _FDCT_ROWS), _FDCT_ROWS_SHIFT, -1)
  coef = _descale(
      dot('...rc,kr->...kc', coef, _FDCT_COLS), _FDCT_COLS_SHIFT, -2
  )
  div = q * 8
  deq = jnp.sign(coef) * ((jnp.abs(coef) + div // 2) // div) * q
  ws = _descale(dot('...uv,ku->...kv', deq, _IDCT), [_CB - _P1] * 8, -2)
  out = _descale(dot('...kv,lv->...kl', ws, _IDCT), [_CB + _P1 + 3] * 8, -1)
  out = jnp.clip(out + 128, 0, 255)
  return out.transpose(0, 1, 3, 2, 4).reshape(b, hh, ww)


def jpeg_compression(rng, x, *, quality: int):
  """JPEG round trip at `quality` (Pillow's default 4:2:0 subsampling) of x
  (b, H, W, 3) in [0, 1]; the input is first rounded to 8 bits. Returns
  (b, H, W, 3) in [0, 1], multiples of 1/255."""
  del rng
  b, h, w, _ = x.shape
  luma_t, chroma_t = quant_tables(quality)
  q8 = jnp.round(jnp.clip(x, 0.0, 1.0) * 255).astype(jnp.int32)
  ph, pw = -h % 16, -w % 16
  q8 = jnp.pad(q8, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  y, cb, cr = rgb_to_ycc(q8)
  y = dct_roundtrip(y, luma_t)[:, :h, :w]
  ch, cw = -(-h // 2), -(-w // 2)
  chroma = []
  for plane in (cb, cr):
    small = dct_roundtrip(downsample_h2v2(plane), chroma_t)[:, :ch, :cw]
    chroma.append(upsample_h2v2_fancy(small)[:, :h, :w])
  rgb = ycc_to_rgb(y, *chroma)
  return rgb.astype(x.dtype) / 255.0
