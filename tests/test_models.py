"""Tests for jaxadv.models: shapes, dtypes, parameter counts, (dual) BatchNorm, normalization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.models import MODELS, get_model, list_models
from jaxadv.models.layers import BatchNorm, get_activation

CIFAR = dict(
    num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616)
)
MNIST = dict(num_classes=10, mean=(0.1307,), std=(0.3081,))

# name -> (get_model kwargs, input HWC, exact parameter count). Counts match the PyTorch
# reference implementations (torch counts BN scale/bias as parameters, running stats not).
CASES = {
    # Madry et al.: ~3.27M.
    'mnist_cnn': (MNIST, (28, 28, 1), 3_274_634),
    'cnn5': (CIFAR, (32, 32, 3), 1_143_466),
    # Wong et al.'s mnist_net (fast_adversarial/MNIST): 272 + 8,224 + 156,900 + 1,010.
    'wong_mnist': (MNIST, (28, 28, 1), 166_406),
    # Wong et al. PreActResNet18 with its final BN: ~11.17M (kuangliu's, without it: 11,171,146).
    'preact_resnet18': (CIFAR, (32, 32, 3), 11_172_170),
    'resnet11': (
        dict(num_classes=1, mean=None, std=None, in_channels=3),
        (32, 32, 3),
        4_898_625,
    ),
    'resnet18': (CIFAR, (32, 32, 3), 11_173_962),  # kuangliu CIFAR ResNet18
    'resnet34': (CIFAR, (32, 32, 3), 21_282_122),
    'resnet50': (CIFAR, (32, 32, 3), 23_520_842),
    'wide_resnet': (
        dict(CIFAR, depth=34, width=10),
        (32, 32, 3),
        46_160_474,
    ),  # TRADES WRN-34-10
}
EXTRA = [  # other configurations worth pinning: (name, kwargs, HWC, count)
    ('wide_resnet', dict(CIFAR, depth=28, width=10), (32, 32, 3), 36_479_194),
    (
        'resnet18',
        dict(CIFAR, num_classes=1000, stem='imagenet'),
        (224, 224, 3),
        11_689_512,
    ),
    (
        'resnet50',
        dict(CIFAR, num_classes=1000, stem='imagenet'),
        (224, 224, 3),
        25_557_032,
    ),
]
SMALL = [
    'mnist_cnn',
    'wong_mnist',
    'cnn5',
    'preact_resnet18',
]  # get a real forward pass


def _shapes(model, hwc, batch=2, **kw):
  """(variables, logits) as ShapeDtypeStructs, without any compute."""
  x = jax.ShapeDtypeStruct((batch, *hwc), jnp.float32)

  def f(x):
    v = model.init(jax.random.key(0), x)
    return v, model.apply(v, x, **kw)

  return jax.eval_shape(f, x)


def _count(tree):
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def test_registry_covered():
  assert set(CASES) == set(MODELS) and list_models() == sorted(MODELS)


@pytest.mark.parametrize('dtype', [jnp.float32, 'bfloat16'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_shapes_dtypes_param_counts(name, dtype):
  kw, hwc, n_params = CASES[name]
  v, logits = _shapes(get_model(name, **kw, dtype=dtype), hwc)
  assert logits.shape == (2, kw['num_classes']) and logits.dtype == jnp.float32
  assert all(
      p.dtype == jnp.float32 for p in jax.tree.leaves(v)
  )  # params/stats stay f32
  assert _count(v['params']) == n_params


@pytest.mark.parametrize('name,kw,hwc,n_params', EXTRA)
def test_extra_param_counts(name, kw, hwc, n_params):
  v, logits = _shapes(get_model(name, **kw), hwc, batch=1)
  assert logits.shape == (1, kw['num_classes'])
  assert _count(v['params']) == n_params


@pytest.mark.parametrize('name', SMALL)
def test_real_forward_float32_and_bfloat16(name):
  kw, hwc, _ = CASES[name]
  x = jax.random.uniform(jax.random.key(1), (2, *hwc))
  v = jax.jit(get_model(name, **kw).init)(
      jax.random.key(0), x
  )  # params do not depend on dtype
  outs = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = get_model(name, **kw, dtype=dtype)
    out = jax.jit(model.apply)(v, x.astype(dtype))
    assert out.shape == (2, 10) and out.dtype == jnp.float32
    assert np.isfinite(out).all()
    outs[dtype] = out
  scale = float(jnp.abs(outs[jnp.float32]).max())
  np.testing.assert_allclose(
      outs[jnp.bfloat16], outs[jnp.float32], atol=0.1 * scale + 1e-3
  )


def _cnn5(**kw):
  return get_model('cnn5', **CIFAR, **kw)


def _jit(model):
  """Jitted apply: one compile is much faster than op-by-op dispatch on CPU."""
  return jax.jit(model.apply, static_argnames=('train', 'adv', 'mutable'))


def _init(model, x, train=False):
  """Jitted init: eager init compiles each random initializer op separately (seconds)."""
  return jax.jit(model.init, static_argnames='train')(
      jax.random.key(0), x, train=train
  )


X = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))


@pytest.fixture(scope='module')
def cnn5():
  """(jitted apply, variables) of a plain cnn5, initialized in train mode."""
  model = _cnn5()
  return _jit(model), _init(model, X, train=True)


def test_batchnorm_train_updates_stats_eval_deterministic(cnn5):
  apply, v = cnn5
  # init must not move the running stats, even in train mode
  for bn in v['batch_stats'].values():
    assert (bn['mean'] == 0).all() and (bn['var'] == 1).all()
  _, upd = apply(v, X, train=True, mutable=('batch_stats',))
  for old, new in zip(
      jax.tree.leaves(v['batch_stats']), jax.tree.leaves(upd['batch_stats'])
  ):
    assert not np.allclose(old, new)
  v = {**v, **upd}
  out1, out2 = apply(v, X), apply(v, X)
  np.testing.assert_array_equal(out1, out2)
  # eval mode uses running stats: a sample's logits do not depend on the rest of the batch
  np.testing.assert_allclose(apply(v, X[:1]), out1[:1], rtol=1e-5, atol=1e-5)
  # a model without dual BN ignores adv (uses the clean set)
  np.testing.assert_array_equal(apply(v, X, adv=True), out1)


def test_batchnorm_layer_normalizes_in_float32():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 5), jnp.bfloat16)
  bn = BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
  v = bn.init(jax.random.key(1), x)
  y, upd = bn.apply(v, x, mutable=['batch_stats'])
  assert (
      y.dtype == jnp.bfloat16
      and upd['batch_stats']['mean'].dtype == jnp.float32
  )
  y = y.astype(jnp.float32)
  np.testing.assert_allclose(y.mean(0), 0.0, atol=0.05)
  np.testing.assert_allclose(y.std(0), 1.0, atol=0.05)
  np.testing.assert_allclose(
      upd['batch_stats']['mean'], 0.1 * x.astype(jnp.float32).mean(0), rtol=1e-5
  )


def test_dual_bn_uses_and_updates_only_the_selected_set(cnn5):
  model = _cnn5(dual_bn=True)
  v, apply = _init(model, X), _jit(model)
  assert jax.tree.structure(v['batch_stats_adv']) == jax.tree.structure(
      v['batch_stats']
  )
  assert 'scale_adv' in v['params']['bn1'] and 'bias_adv' in v['params']['bn1']
  plain = cnn5[1]
  assert (
      'batch_stats_adv' not in plain
      and 'scale_adv' not in plain['params']['bn1']
  )
  cols = ('batch_stats', 'batch_stats_adv')
  for adv, changed, same in [
      (True, 'batch_stats_adv', 'batch_stats'),
      (False, 'batch_stats', 'batch_stats_adv'),
  ]:
    _, upd = apply(v, X, train=True, adv=adv, mutable=cols)
    assert jax.tree.all(jax.tree.map(np.array_equal, upd[same], v[same]))
    assert not any(
        jax.tree.leaves(jax.tree.map(np.array_equal, upd[changed], v[changed]))
    )
  # the adv pass really uses the adv params
  v['params']['bn3']['bias_adv'] = v['params']['bn3']['bias_adv'] + 1.0
  assert not np.allclose(apply(v, X, adv=True), apply(v, X, adv=False))


def test_normalization_is_inside_the_model(cnn5):
  apply, v = cnn5
  identity = get_model('cnn5', num_classes=10, mean=(0.0,) * 3, std=(1.0,) * 3)
  z = (X - jnp.array(CIFAR['mean'])) / jnp.array(CIFAR['std'])
  np.testing.assert_allclose(
      apply(v, X), _jit(identity)(v, z), rtol=1e-5, atol=1e-5
  )


def test_activation_choice(cnn5):
  assert float(
      get_activation('leaky_relu')(jnp.float32(-1.0))
  ) == pytest.approx(-0.2)
  apply, v = cnn5
  assert not np.allclose(apply(v, X), _jit(_cnn5(activation='swish'))(v, X))


def test_resnet11_on_non_image_inputs():
  model = get_model(
      'resnet11', num_classes=1, mean=None, std=None, in_channels=8
  )
  _, logits = _shapes(model, (8, 8, 8))
  assert logits.shape == (2, 1)
  with pytest.raises(ValueError, match='input channels'):
    _shapes(model, (8, 8, 3))


def test_preact_torch_init_matches_pytorch_defaults():
  # Wong et al.'s PyTorch PreActResNet18 keeps PyTorch's default init: every conv and the fc
  # U(+-1/sqrt(fan_in)) (std 1/sqrt(3 fan_in)), the fc bias too; 'he' is He-normal fan_out.
  x = jnp.zeros((1, 32, 32, 3))
  stds = {}
  for init in ('he', 'torch'):
    v = get_model('preact_resnet18', **CIFAR, init=init).init(
        jax.random.key(0), x
    )
    p = v['params']
    assert _count(p) == 11_172_170
    w = np.asarray(p['stage1_block1']['conv1']['kernel'])  # 3x3x64 -> 64
    stds[init] = w.std()
    if init == 'torch':
      assert np.abs(w).max() <= 1 / np.sqrt(9 * 64)
      assert w.std() == pytest.approx(1 / np.sqrt(3 * 9 * 64), rel=0.05)
      b = np.asarray(p['fc']['bias'])
      assert np.all(np.abs(b) <= 1 / np.sqrt(512)) and np.abs(b).max() > 0
      fc = np.asarray(p['fc']['kernel'])
      assert fc.std() == pytest.approx(1 / np.sqrt(3 * 512), rel=0.1)
    else:
      assert w.std() == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.05)
      assert not np.any(np.asarray(p['fc']['bias']))
  assert stds['he'] > 2 * stds['torch']
  with pytest.raises(ValueError, match='valid: he, torch'):
    get_model('preact_resnet18', **CIFAR, init='xavier')


def test_errors_list_valid_choices():
  with pytest.raises(
      ValueError, match="unknown model 'nope'; valid: cnn5, mnist_cnn"
  ):
    get_model('nope', **CIFAR)
  with pytest.raises(
      ValueError, match=r"'resnet18' got unknown kwargs \['depth'\].*stem"
  ):
    get_model('resnet18', **CIFAR, depth=3)
  with pytest.raises(ValueError, match='accepted: none'):
    get_model('cnn5', **CIFAR, stem='cifar')
  with pytest.raises(ValueError, match='valid: cifar, imagenet'):
    get_model('resnet50', **CIFAR, stem='tiny')
  with pytest.raises(ValueError, match='valid: gelu, leaky_relu, relu'):
    get_activation('tanh')
  with pytest.raises(ValueError, match='mean/std of length 3'):
    _shapes(get_model('mnist_cnn', **CIFAR), (28, 28, 1))
