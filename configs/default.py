"""Every configuration key of jaxadv, with its default and one comment each.

Experiment configs (one file per experiment) start from this and override what
they change. Run any of them with

  python main.py --config configs/<name>.py --workdir runs/<name> [--config.key=value ...]
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0  # one seed for init, data order, augmentation and attacks

  c.data = ml_collections.ConfigDict()
  c.data.name = (
      'mnist'  # mnist | cifar10 (offline files or TFDS) | any TFDS name
  )
  c.data.data_dir = (
      ''  # '' = $JAXADV_DATA_DIR, else ../shared/data if present, else TFDS
  )
  c.data.cache_dir = ''  # '' = <repo>/.cache (decoded CIFAR-10 arrays)
  c.data.train_fraction = (
      1.0  # class-balanced seeded subset of the train split (GREAT: 0.05)
  )
  c.data.num_train_examples = (
      0  # >0: class-balanced seeded subset of exactly this many
  )
  c.data.num_test_examples = (
      0  # >0: seeded random test subset (smoke runs only)
  )
  c.data.feed = 'auto'  # auto | device (whole train split on every device, batches gathered there) | host | stream (read in worker processes, for data larger than memory)
  c.data.augment = 'auto'  # auto (crop+flip for 32x32 colour, none otherwise) | crop_flip | flip | none

  c.model = ml_collections.ConfigDict()
  c.model.name = 'mnist_cnn'  # see jaxadv.models.MODELS
  c.model.normalize = True  # (x - dataset mean) / std as the model's first op (False: raw [0, 1] pixels)
  c.model.activation = 'relu'  # relu | leaky_relu | swish | gelu | softplus
  c.model.dual_bn = (
      False  # a second BatchNorm set for adversarial inputs (AdvProp)
  )
  c.model.kwargs = (
      ml_collections.ConfigDict()
  )  # model-specific: depth, width, stem, in_channels

  c.method = ml_collections.ConfigDict()
  c.method.name = (
      'standard'  # see jaxadv.methods.METHODS; method keys live beside the name
  )
  # Method keys (set beside the name in an experiment config; a key a method
  # does not know is an error). Defaults in brackets.
  # standard: none.
  # pgd:  eps (required; pixel scale, 8/255 or 0.3; L2 e.g. 1.0)
  #       steps (required; K PGD steps per training step)
  #       step_size [PGD's 2.5 * eps / steps]   norm ['linf' | 'l2']
  #       random_start [True]                   clean_weight [0.0: trains on
  #       (1 - w) CE(x_adv) + w CE(x)]           attack_bn ['train' | 'eval']
  # fast: eps (required)   step_size [1.25 eps linf, 1.5 eps l2]
  #       norm ['linf']    clean_weight [0.0]   attack_bn ['train']
  #       clip_start [True: take the gradient at the start clipped to [0, 1]]
  # free: eps (required)   replays (required; m)   step_size [eps]
  # great: variant ['both' | 'great' | 'greace']   alpha_max [1.0]
  #       beta_max [2.0; 10 for SVHN]   aux_model ['' = the main architecture]
  #       aux_activation ['leaky_relu']  aux_kwargs [the main model's kwargs]
  #       aux_optim [Adam, lr 1e-3, schedule 'poly' 0.9; keys as c.optim]
  # stale: staleness (required; s >= 0: train on the PGD batch crafted s steps
  #       earlier; the first s steps only fill the queue)
  #       fresh_every [log_every; steps between fresh-attack accuracy
  #       batches, 0 = never]   eps, steps, step_size, norm, random_start,
  #       attack_bn as pgd (no clean_weight)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'  # sgd | adam | adamw
  c.optim.lr = 0.1  # peak learning rate
  c.optim.momentum = 0.9  # sgd momentum (0 = plain SGD)
  c.optim.nesterov = False  # sgd Nesterov momentum
  c.optim.weight_decay = 5e-4  # sgd: L2 added to the gradient; adamw: decoupled
  c.optim.b1 = 0.9  # adam/adamw
  c.optim.b2 = 0.999  # adam/adamw
  c.optim.schedule = (
      'constant'  # constant | piecewise | cosine | onecycle | poly
  )
  c.optim.warmup_epochs = 0.0  # linear warm-up (constant, piecewise, cosine)
  c.optim.boundaries = (
      0.5,
      0.75,
  )  # piecewise: fractions of training where lr is scaled
  c.optim.scales = (0.1, 0.1)  # piecewise: multiplier applied at each boundary
  c.optim.onecycle_peak = (
      0.4  # onecycle: fraction of training spent rising to the peak
  )
  c.optim.poly_power = 0.9  # poly: lr * (1 - epoch/num_epochs) ** power (GREAT)
  c.optim.grad_clip = 0.0  # >0: clip the global gradient norm
  # Parameter groups: name -> ConfigDict(pattern=regex on 'module/.../param'
  # paths, lr_scale=1.0, weight_decay=None (= optim's), frozen=False); a
  # parameter takes the first matching group, else the plain optimizer.
  c.optim.groups = ml_collections.ConfigDict()

  c.num_epochs = (
      2  # passes over the train split (Free makes m updates per batch)
  )
  c.batch_size = 128  # global batch, split over all devices
  c.eval_batch_size = 1024  # global eval batch (last one padded and masked)
  c.dtype = 'float32'  # compute dtype: float32 | bfloat16 (params stay float32)
  c.sync_bn = (
      True  # BatchNorm batch statistics over the global batch (else per device)
  )
  c.runner = 'sync'  # where updates come from (jaxadv.runners): sync = synchronous data parallelism
  c.steps_per_call = 0  # train steps fused into one jit call (lax.scan); 0 = auto: 1 on CPU, 10 on GPU/TPU
  c.log_every = 100  # steps between metric fetches (no host sync in between)
  c.eval_every = (
      1  # epochs between clean test evaluations (0 = only at the end)
  )
  c.checkpoint_every = (
      1  # epochs between checkpoints (the final one is always saved)
  )
  c.keep_checkpoints = 3  # checkpoints kept in <workdir>/checkpoints
  c.distributed = (
      False  # call jax.distributed.initialize() (multi-host TPU/GPU)
  )
  c.progress = True  # progress bar on a terminal
  c.tensorboard = True  # TensorBoard event files in <workdir>/tensorboard (beside metrics.jsonl)
  c.halt_on_nonfinite = (
      True  # stop on NaN/Inf loss, keeping the last good checkpoint
  )

  c.eval = ml_collections.ConfigDict()
  c.eval.attacks = ()  # attack specs, e.g. 'pgd(norm=linf, eps=8/255, steps=50, restarts=10)'
  c.eval.num_examples = 0  # 0 = whole test set, else a seeded random subset
  c.eval.seed = 0  # seed of the subset and of the attacks' random starts
  c.eval.batch_size = 512  # attack batch size (a multiple of the device count)
  c.eval.at_end = False  # run config.eval.attacks after training finishes
  c.eval.dtype = 'float32'  # compute dtype of evaluation ('' = config.dtype): a bf16-trained
  # model is evaluated on its float32 weights, as the PyTorch
  # references do (model.float()), so attack gradients are not
  # quantized

  # Catastrophic-overfitting monitor (Wong et al.'s early stopping): every epoch,
  # `attack` on a fixed training minibatch; a drop of more than `max_drop` below
  # the best robust accuracy stops training and keeps the best checkpoint.
  c.monitor = ml_collections.ConfigDict()
  c.monitor.attack = ''  # '' = off, else an attack spec
  c.monitor.max_drop = 0.2  # fraction (0.2 = 20 points)
  c.monitor.num_examples = 512  # size of the fixed training minibatch

  # --mode viz (jaxadv/tools/viz.py): pictures of what runs learned.
  c.viz = ml_collections.ConfigDict()
  c.viz.compare = ''  # other workdirs shown beside --workdir, comma-separated
  c.viz.labels = ''  # their names, comma-separated ('' = folder names)
  c.viz.out = ''  # output folder ('' = <workdir>/viz)
  c.viz.seed = 0  # test images, nodes, attack keys
  c.viz.num_images = 4  # test images for saliency and large perturbations
  c.viz.num_seeds = 2  # test-image seeds of feature visualization (+ 1 noise)
  c.viz.nodes_per_seed = 5  # random representation nodes per seed (paper: 5)
  c.viz.fv_steps = 200  # feature visualization: L2 ascent steps
  c.viz.fv_step_size = 0.15  # their length (L2, pixel scale)
  c.viz.interp_lambdas = (0.25, 0.5, 0.75)  # eq. 14's lambda
  c.viz.interp_steps = 300  # representation matching steps
  c.viz.interp_step_size = 0.05
  c.viz.large_eps = (
      30.0  # targeted L2 PGD radius (32x32: 55 is the box's diameter)
  )
  c.viz.large_steps = 500  # its steps (paper, 224x224: eps 500, K = 1000)
  c.viz.sweep_attack = 'pgd(norm=l2, steps=10)'  # robust accuracy vs eps
  c.viz.sweep_eps = (0.0, 0.25, 0.5, 1.0, 1.5)
  c.viz.sweep_examples = 200
  return c
