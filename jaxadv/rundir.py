"""Workdir integrity: what the run layer checks before it writes anything.

A workdir holds one run: config.json (the config it was started with),
config_history.jsonl (the changes of each later resume), metrics.jsonl,
checkpoints/ and reports. The helpers here keep it whole:

  check_workdir      before anything is created: a usable --workdir
  compare_configs    which changes a resume cannot survive, which are risky
  record_config      config.json once, then history; refuses fatal changes
  truncate_metrics   no metrics record twice after a resume
  report_name        eval reports named by their settings, never replaced
  write_atomic       a file is either old or new, never half written
  check_free_space   room for checkpoints before training starts
  disk_error_message ENOSPC and friends as one line

plus `split_top_level` for list-valued --config overrides. Pure Python (no
JAX), so main.py can use it before JAX starts. Errors are ConfigError with a
one-line message naming the path and the fix.
"""

import datetime
import errno
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterable, Mapping, Optional

from jaxadv.errors import ConfigError

CONFIG_FILE = 'config.json'
HISTORY_FILE = 'config_history.jsonl'
CHECKPOINT_DIR = 'checkpoints'
MODES = ('train', 'eval', 'viz')

# ----------------------------------------------------------------------------
# Before anything is created.


def _nearest_existing(path: str) -> str:
  """`path` or its nearest ancestor that exists (a file or a directory)."""
  while not os.path.lexists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def _writable_dir(folder: str) -> Optional[str]:
  """None if a file can be created in `folder`, else the reason it cannot.

  Creates and removes a file rather than asking os.access, which answers
  for the permission bits only (wrong for ACLs, quotas, root).
  """
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.jaxadv-write-test-')
    os.close(fd)
    os.remove(tmp)
  except OSError as e:
    return _errno_reason(e)
  return None


def _errno_reason(exc: OSError) -> str:
  if exc.errno == errno.EROFS:
    return 'read-only file system'
  if exc.errno in (errno.EACCES, errno.EPERM):
    return 'permission denied'
  if exc.errno in (errno.ENOSPC, errno.EDQUOT):
    return 'no space left on device (ENOSPC)'
  return exc.strerror or str(exc)


def output_dir_problem(path: str) -> Optional[str]:
  """None if `path` is (or can be made) a writable folder, else why not, in
  a few words; creates nothing. For tools that write into a folder, checked
  before any compute."""
  full = os.path.abspath(os.path.expanduser(path))
  if os.path.lexists(full) and not os.path.isdir(full):
    return 'it is a file, not a folder'
  existing = _nearest_existing(full)
  if not os.path.isdir(existing):
    return f'it lies under {existing}, which is a file'
  reason = _writable_dir(existing)
  return f'not writable ({reason})' if reason else None


def has_run(path: str) -> bool:
  """Whether `path` holds a run: config.json or checkpoints/."""
  return os.path.isfile(os.path.join(path, CONFIG_FILE)) or os.path.isdir(
      os.path.join(path, CHECKPOINT_DIR)
  )


def check_workdir(path: str, mode: str) -> str:
  """Checks --workdir before anything is created; returns its absolute path.

  Both modes: `path` must not be a file, nor lie under one, and it (or, when
  it does not exist yet, its nearest existing ancestor) must be writable.
  mode 'eval': `path` must already hold a run (config.json or checkpoints/)
  and be writable, since the reports go there; nothing is created. Mode
  'viz' needs a run too (it checks its own output folder).
  Raises ConfigError with one line naming the path and the fix; creates
  nothing (a write test file is removed at once).
  """
  if mode not in MODES:
    raise ConfigError(f'--mode={mode}; valid: {", ".join(MODES)}')
  if not path:
    raise ConfigError('--workdir is empty; pass a directory for the run')
  full = os.path.abspath(os.path.expanduser(path))
  if os.path.lexists(full) and not os.path.isdir(full):
    raise ConfigError(
        f'--workdir {path} is a file, not a directory; pass a ' 'directory path'
    )
  existing = _nearest_existing(full)
  if not os.path.isdir(existing):
    raise ConfigError(
        f'--workdir {path} lies under {existing}, which is a '
        'file; pass a directory path'
    )
  if mode in ('eval', 'viz'):
    if existing != full:
      raise ConfigError(
          f'no run in {path}: the directory does not exist; '
          'pass the --workdir of a trained run'
      )
    if not has_run(full):
      raise ConfigError(
          f'no run in {path}: it holds neither {CONFIG_FILE} '
          f'nor {CHECKPOINT_DIR}/; pass the --workdir of a '
          'trained run'
      )
    reason = _writable_dir(full) if mode == 'eval' else None
    if reason:  # viz checks its own output folder (config.viz.out)
      raise ConfigError(
          f'--workdir {path} is not writable ({reason}) and '
          '--mode eval writes its reports there: make it '
          'writable, or copy the run to a writable directory '
          'and evaluate the copy'
      )
    return full
  reason = _writable_dir(existing)
  if reason:
    where = '' if existing == full else f' (cannot create it in {existing})'
    raise ConfigError(
        f'--workdir {path} is not writable{where}: {reason}; '
        'pass a writable directory'
    )
  ckpt = os.path.join(full, CHECKPOINT_DIR)
  if os.path.isdir(ckpt):
    reason = _writable_dir(ckpt)
    if reason:
      raise ConfigError(
          f'{ckpt} is not writable ({reason}); make it writable '
          'or pass a new --workdir'
      )
  return full


# ----------------------------------------------------------------------------
# Comparing a resumed run's config with its own.

# Keys whose change makes the checkpoint unrestorable, or restorable into a
# different function (the model's activation or normalization): an entry
# matches the key itself and every key below it; '*' matches any one part.
# The run layer adds the keys a method declares through `extra_fatal` (e.g.
# 'batch_size' for a method with per-example state such as Free's delta).
FATAL_KEYS = (
    'model',  # architecture, kwargs, dual_bn, activation, normalize
    'data.name',  # classes, image shape
    'method.name',  # nets, frozen nets and method_state layout
    'method.aux',  # a method's auxiliary networks (their params, optim)
    'method.networks',
    'optim.name',  # opt_state layout (sgd trace vs adam moments)
    'optim.groups.*.pattern',  # which parameters each group's state covers
    'optim.groups.*.frozen',  # set_to_zero (no state) vs the optimizer's
)
# Keys whose change alters opt_state's structure only when they switch
# between zero (absent from the optax chain) and positive; see jaxadv.optim.
FATAL_WHEN_TOGGLED = ('optim.grad_clip', 'optim.momentum')
# Keys that change neither the state nor the training: never warned about.
IGNORED_KEYS = (
    'checkpoint_every',
    'data.cache_dir',
    'data.data_dir',
    'data.feed',
    'distributed',
    'eval',
    'eval_batch_size',
    'eval_every',
    'halt_on_nonfinite',
    'keep_checkpoints',
    'log_every',
    'progress',
    'steps_per_call',
)
# Every other key (num_epochs, batch_size, optim.*, data.* subsets, method
# keys such as eps, seed, dtype, sync_bn, monitor.*) is risky: the resumed
# run continues, but is no longer the run that was started.

_ABSENT = '(absent)'


def _matches(key: str, entries: Iterable[str]) -> bool:
  """Whether dotted `key` is an entry or lies below one ('*': any part)."""
  parts = key.split('.')
  for entry in entries:
    want = entry.split('.')
    if len(want) <= len(parts) and all(
        w in ('*', p) for w, p in zip(want, parts)
    ):
      return True
  return False


def _jsonable(value: Any) -> Any:
  """Tuples as JSON lists, so a config.to_dict() compares with its JSON."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def flatten(tree: Mapping, prefix: str = '') -> dict:
  """{'a': {'b': 1}, 'c': {}} -> {'a.b': 1}: the leaves by dotted key."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, Mapping):
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def config_changes(saved: Mapping, new: Mapping) -> dict:
  """{dotted key: (old, new)} for every leaf that differs, sorted by key; a
  key present on one side only shows '(absent)' on the other."""
  a, b = flatten(_jsonable(saved)), flatten(_jsonable(new))
  return {
      k: (a.get(k, _ABSENT), b.get(k, _ABSENT))
      for k in sorted(set(a) | set(b))
      if a.get(k, _ABSENT) != b.get(k, _ABSENT)
  }


def _positive(value: Any) -> bool:
  return isinstance(value, (int, float)) and value > 0


def compare_configs(
    saved: Mapping, new: Mapping, *, extra_fatal: Iterable[str] = ()
) -> tuple[list, list]:
  """(fatal, risky): sorted dotted keys that differ between two configs.

  `saved` is a run's config.json, `new` the config it is rerun with
  (config.to_dict()); both plain nested dicts. fatal: keys in FATAL_KEYS or
  `extra_fatal` (a checkpoint saved under `saved` cannot be restored, or
  would compute another function, under `new`), and FATAL_WHEN_TOGGLED keys
  switching between zero and positive. risky: every other key except
  IGNORED_KEYS.
  """
  fatal_entries = tuple(FATAL_KEYS) + tuple(extra_fatal)
  fatal, risky = [], []
  for key, (old, value) in config_changes(saved, new).items():
    if _matches(key, fatal_entries):
      fatal.append(key)
    elif key in FATAL_WHEN_TOGGLED and _positive(old) != _positive(value):
      fatal.append(key)
    elif not _matches(key, IGNORED_KEYS):
      risky.append(key)
  return fatal, risky


def _short(value: Any, limit: int = 40) -> str:
  text = value if isinstance(value, str) else json.dumps(value)
  return text if len(text) <= limit else text[: limit - 3] + '...'


def describe(changes: Mapping, keys: Iterable[str]) -> str:
  """'config.a (1 -> 2), config.b (x -> y)' for `keys` of config_changes."""
  return ', '.join(
      f'config.{k} ({_short(changes[k][0])} -> ' f'{_short(changes[k][1])})'
      for k in keys
  )


def read_saved_config(workdir: str) -> Optional[dict]:
  """The run's config.json as a dict, None if absent; ConfigError if it
  cannot be read."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(
        f'{path} is damaged ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}); restore '
        'it from a copy of the run or use a new --workdir'
    ) from None
  if not isinstance(saved, dict):
    raise ConfigError(
        f'{path} is damaged (not a JSON object); restore it '
        'from a copy of the run or use a new --workdir'
    )
  return saved


def record_config(
    workdir: str,
    config_dict: Mapping,
    *,
    resumed_from_step: Optional[int] = None,
    extra_fatal: Iterable[str] = (),
    write: bool = True,
) -> dict:
  """Records the config of a run; returns the risky changes {key: (old, new)}.

  The first run writes <workdir>/config.json. A rerun (config.json exists)
  first compares (compare_configs against config.json): a fatal change
  raises ConfigError naming the keys and leaves every file as it was; then,
  never touching config.json, it appends one line to config_history.jsonl:
  {"time": ISO 8601 UTC, "resumed_from_step": int or null,
  "changed": {key: [old, new]}} (all changes against config.json, ignored
  keys included). The caller prints risky_warning() for a non-empty result.
  write=False checks only (processes other than 0). The workdir must exist.
  """
  saved = read_saved_config(workdir)
  if saved is None:
    if write:
      write_atomic(
          os.path.join(workdir, CONFIG_FILE),
          json.dumps(_jsonable(config_dict), indent=2, default=str) + '\n',
      )
    return {}
  changes = config_changes(saved, config_dict)
  fatal, risky = compare_configs(saved, config_dict, extra_fatal=extra_fatal)
  if fatal:
    verb = 'differs' if len(fatal) == 1 else 'differ'
    raise ConfigError(
        f'{describe(changes, fatal)} {verb} from the run in '
        f'{workdir}: its checkpoint cannot be restored with '
        'this config; use a new --workdir (or drop the '
        'override)'
    )
  if write:
    record = {
        'time': (
            datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec='seconds'
            )
        ),
        'resumed_from_step': resumed_from_step,
        'changed': {k: list(v) for k, v in changes.items()},
    }
    path = os.path.join(workdir, HISTORY_FILE)
    try:
      with open(path, 'a') as f:
        f.write(json.dumps(record, default=str) + '\n')
    except OSError as e:
      raise _disk_error(e, path) from None
  return {k: changes[k] for k in risky}


def risky_warning(workdir: str, risky: Mapping) -> str:
  """One line for record_config's risky changes (without 'warning: ')."""
  return (
      f'{describe(risky, risky)} differ{"s" if len(risky) == 1 else ""} '
      f'from the run in {workdir}; continuing (recorded in '
      f'{HISTORY_FILE})'
  )


# ----------------------------------------------------------------------------
# metrics.jsonl after a resume.


def truncate_metrics(path: str, step: int) -> int:
  """Drops the records of metrics.jsonl whose 'step' is greater than `step`.

  Called on resume from the checkpoint at `step`, before the first new
  record: records written after that checkpoint (a run killed between a log
  and the next save) are written again by the resumed run. A last line cut
  short (a kill during a write) is dropped too; other lines that do not
  parse and records without 'step' are kept. Rewrites atomically, only if
  something is dropped. Returns the number of lines dropped (0 if `path`
  does not exist).
  """
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    return 0
  lines = raw.split(b'\n')
  if lines and not lines[-1]:
    lines.pop()  # the file ends with a newline, as every whole record does
  kept, dropped = [], 0
  for i, line in enumerate(lines):
    try:
      record = json.loads(line)
    except ValueError:
      if i == len(lines) - 1:
        dropped += 1
        continue
      kept.append(line)
      continue
    rec_step = record.get('step') if isinstance(record, dict) else None
    if isinstance(rec_step, (int, float)) and rec_step > step:
      dropped += 1
    else:
      kept.append(line)
  if dropped:
    write_atomic(path, b''.join(line + b'\n' for line in kept))
  return dropped


# ----------------------------------------------------------------------------
# Reports and atomic writes.


def report_name(
    attack_specs: Iterable[str],
    num_examples: int = 0,
    seed: int = 0,
    **settings: Any,
) -> str:
  """'eval-' + 8 hex digits of the settings: a stable file stem per eval.

  Two evaluations with the same attack specs (in order), num_examples, seed
  and `settings` (e.g. dtype) share the name (a rerun replaces its own
  report); any other evaluation gets its own, so an earlier report is kept.
  """
  key = json.dumps(
      {
          'attacks': [str(s) for s in attack_specs],
          'num_examples': int(num_examples),
          'seed': int(seed),
          **{k: _jsonable(v) for k, v in settings.items()},
      },
      sort_keys=True,
  )
  return 'eval-' + hashlib.sha1(key.encode()).hexdigest()[:8]


def write_atomic(path: str, text) -> None:
  """Writes `text` (str or bytes) to `path` through a temporary file in the
  same folder and os.replace: readers see the old or the new file, never a
  part. A full disk or read-only location raises ConfigError naming the
  path (disk_error_message); the temporary file is removed."""
  folder = os.path.dirname(os.path.abspath(path))
  data = text.encode() if isinstance(text, str) else bytes(text)
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp'
    )
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    raise _disk_error(e, path) from None
  finally:
    if tmp is not None:
      try:
        os.remove(tmp)
      except OSError:
        pass


# ----------------------------------------------------------------------------
# Disk space.


def check_free_space(path: str, min_bytes: int) -> int:
  """Returns the free bytes on the filesystem of `path` (or of its nearest
  existing ancestor); ConfigError if fewer than `min_bytes` (e.g. a few
  checkpoints' worth before training starts)."""
  where = _nearest_existing(os.path.abspath(os.path.expanduser(path)))
  if not os.path.isdir(where):
    where = os.path.dirname(where)
  free = shutil.disk_usage(where).free
  if free < min_bytes:
    raise ConfigError(
        f'only {_mb(free)} free on the file system of {path}; '
        f'the run needs about {_mb(min_bytes)} (checkpoints): '
        'free some space or pass another --workdir'
    )
  return free


def _mb(n: int) -> str:
  return f'{n / 2**20:.0f} MiB' if n < 10 * 2**30 else f'{n / 2**30:.1f} GiB'


def _os_errors(exc: BaseException):
  """exc and the exceptions it was raised from or during (orbax and asyncio
  wrap the OSError), first to last."""
  seen = []
  while exc is not None and exc not in seen and len(seen) < 20:
    seen.append(exc)
    exc = exc.__cause__ or exc.__context__
  return seen


def disk_error_message(exc: BaseException, path: str) -> Optional[str]:
  """One line for a write that failed for lack of space or of write access
  (ENOSPC, EDQUOT, EROFS, EACCES, EPERM) anywhere in `exc`'s chain, naming
  the errno and `path`; None for any other error (let it propagate)."""
  for e in _os_errors(exc):
    code = getattr(e, 'errno', None) if isinstance(e, OSError) else None
    if code is None and 'No space left on device' in str(e):
      code = errno.ENOSPC  # tensorstore reports it as text
    if code in (errno.ENOSPC, errno.EDQUOT):
      name = 'ENOSPC' if code == errno.ENOSPC else 'EDQUOT'
      return (
          f'no space left on device ({name}) writing {path}: free some '
          'space, then rerun the same command (it resumes from the '
          'last checkpoint)'
      )
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
      name = errno.errorcode[code]
      return (
          f'cannot write {path} ({name}: {_errno_reason(e)}); make it '
          'writable or pass another --workdir'
      )
  return None


def _disk_error(exc: OSError, path: str) -> Exception:
  message = disk_error_message(exc, path)
  return ConfigError(message) if message else exc


# ----------------------------------------------------------------------------
# Command line.


def split_top_level(text: str) -> list[str]:
  """Splits on commas outside (), [], {} and quotes; strips, drops empties.

  'fgsm(eps=0.1), pgd(eps=0.1, steps=10)' -> ['fgsm(eps=0.1)',
  'pgd(eps=0.1, steps=10)']; '' -> []. Unbalanced brackets are kept as they
  are (the item's own parser reports them).
  """
  items, depth, quote, start = [], 0, '', 0
  for i, ch in enumerate(text):
    if quote:
      quote = '' if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth = max(depth - 1, 0)
    elif ch == ',' and depth == 0:
      items.append(text[start:i])
      start = i + 1
  items.append(text[start:])
  return [item.strip() for item in items if item.strip()]


def split_list_overrides(config: Any, paths: Iterable[str]) -> dict:
  """{path: tuple} for the overridden tuple-of-strings keys whose items hold
  top-level commas or are empty.

  ml_collections keeps `--config.eval.attacks=fgsm(eps=0.1),pgd(eps=0.1)`
  as the one string ('fgsm(eps=0.1),pgd(eps=0.1)',) and an empty value as
  ('',); split_top_level each item. `config` is a ConfigDict or dict and
  `paths` the dotted keys given on the command line; the caller assigns the
  new values.
  """
  out = {}
  for path in paths:
    node = config
    try:
      for part in path.split('.'):
        node = node[part]
    except (KeyError, TypeError, AttributeError):
      continue
    if not isinstance(node, tuple) or not all(isinstance(v, str) for v in node):
      continue
    items = tuple(item for v in node for item in split_top_level(v))
    if items != node:
      out[path] = items
  return out
