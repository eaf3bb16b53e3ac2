"""What a dataset is, without its examples: classes, image shape, the
per-channel statistics the model normalizes with, the default augmentation
and the features every example carries.

Building a run reads only these facts (and the split sizes), so a dataset
larger than memory is never loaded to construct the model or count steps.
"""

from typing import NamedTuple

AUGMENTATIONS = ('none', 'flip', 'crop', 'crop_flip')


class Feature(NamedTuple):
  """One feature of every example of a split.

  shape: per example (no batch axis); dtype: numpy dtype name; image: True
  for image-shaped features (H, W, C), which device augmentation crops and
  flips together with 'image' (multi-task targets: a colour image, edges).
  """

  shape: tuple
  dtype: str
  image: bool = False


def image_features(image_shape, image_dtype='uint8'):
  """The features of a classification dataset: 'image' and 'label'."""
  return {
      'image': Feature(tuple(image_shape), image_dtype, True),
      'label': Feature((), 'int32'),
  }


def image_keys(features):
  """Names of the image-shaped features, 'image' first."""
  keys = [k for k, f in features.items() if f.image]
  return sorted(keys, key=lambda k: (k != 'image', k))


class DatasetInfo(NamedTuple):
  num_classes: int
  image_shape: tuple  # (H, W, C) of the model's input
  mean: tuple  # per channel, pixel scale [0, 1]
  std: tuple
  augment: str  # what config.data.augment='auto' resolves to


DATASET_INFO = {
    'mnist': DatasetInfo(10, (28, 28, 1), (0.1307,), (0.3081,), 'none'),
    'cifar10': DatasetInfo(
        10,
        (32, 32, 3),
        (0.4914, 0.4822, 0.4465),
        (0.2471, 0.2435, 0.2616),
        'crop_flip',
    ),
    'cifar100': DatasetInfo(
        100,
        (32, 32, 3),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        'crop_flip',
    ),
    'svhn_cropped': DatasetInfo(
        10,
        (32, 32, 3),
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        'crop',
    ),
    # Source images vary in size: the streamed pipeline crops them to the
    # (224, 224, 3) input on the host (random-resized crop + flip for train,
    # resize + centre crop for eval), so no device augmentation follows.
    'imagenet2012': DatasetInfo(
        1000,
        (224, 224, 3),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        'none',
    ),
    'imagenette': DatasetInfo(
        10,
        (224, 224, 3),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        'none',
    ),
}
