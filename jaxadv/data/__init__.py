"""Datasets, host-side batching and device-side augmentation.

  info       what a dataset is without its examples (DatasetInfo, Feature)
  offline    the offline MNIST/CIFAR-10 files: locate, read, cache
  tfds_source  any TFDS dataset (an optional import)
  datasets   splits (in-memory ArraySplit; streamed splits), Dataset,
             load_dataset and the configured subsets
  batching   which examples each train step / eval batch holds (pure
             functions of seed, epoch, step), dict batches of every feature
  augment    device-side uint8 -> [0, 1] and crop/flip of every
             image-shaped feature

Images stay uint8 (N, H, W, C) on the host and travel to the device as uint8;
`to_float` / `augment_batch` turn them into float32 pixels in [0, 1] inside
the jitted step. Normalization (mean/std) belongs to the model, so attacks
work in [0, 1].

Sources, in order: the offline copies of MNIST and CIFAR-10 (see
../shared/data/README.md) in `config.data.data_dir`, $JAXADV_DATA_DIR or an
auto-detected ../shared/data; otherwise TFDS (imported lazily, so a machine
without tensorflow-datasets can still train on the offline files).
"""

from jaxadv.data.augment import augment
from jaxadv.data.augment import augment_batch
from jaxadv.data.augment import random_crop
from jaxadv.data.augment import random_flip
from jaxadv.data.augment import to_float
from jaxadv.data.batching import DEVICE_FEED_MAX_BYTES
from jaxadv.data.batching import eval_batches
from jaxadv.data.batching import eval_index_batches
from jaxadv.data.batching import FEEDS
from jaxadv.data.batching import feed_on_device
from jaxadv.data.batching import index_chunks
from jaxadv.data.batching import steps_per_epoch
from jaxadv.data.batching import train_batches
from jaxadv.data.batching import train_chunks
from jaxadv.data.datasets import ArraySplit
from jaxadv.data.datasets import balanced_subset
from jaxadv.data.datasets import Dataset
from jaxadv.data.datasets import load_dataset
from jaxadv.data.datasets import random_subset
from jaxadv.data.info import AUGMENTATIONS
from jaxadv.data.info import DATASET_INFO
from jaxadv.data.info import DatasetInfo
from jaxadv.data.info import Feature
from jaxadv.data.info import image_keys
from jaxadv.data.offline import cifar10_cache_files
from jaxadv.data.offline import DATA_DIR_ENV
from jaxadv.data.offline import damaged
from jaxadv.data.offline import decode_jpegs
from jaxadv.data.offline import default_data_dirs
from jaxadv.data.offline import OFFLINE_DATASETS
from jaxadv.data.offline import offline_dir
from jaxadv.data.offline import read_idx
from jaxadv.data.offline import REPO_ROOT
