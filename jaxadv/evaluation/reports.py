"""Eval reports: markdown tables of eval records, the sanity-flag section,
and the JSON/markdown files a run writes (process 0 only)."""

import json
import os

import jax

from jaxadv.evaluation import sanity


def markdown_table(
    records,
    columns=(
        'name',
        'norm',
        'eps',
        'steps',
        'step_size',
        'restarts',
        'loss',
        'num_examples',
        'accuracy',
    ),
):
  """Markdown table of eval records (accuracy in percent)."""

  def fmt(key, v):
    if key == 'accuracy':
      return f'{100 * v:.2f}%'
    if isinstance(v, float):
      return f'{v:.4g}'
    return '' if v is None else str(v)

  lines = [
      '| ' + ' | '.join(columns) + ' |',
      '|' + '|'.join('---' for _ in columns) + '|',
  ]
  lines += [
      '| ' + ' | '.join(fmt(c, r.get(c)) for c in columns) + ' |'
      for r in records
  ]
  return '\n'.join(lines)


def warnings_markdown(warnings):
  """The sanity-flag section printed below every table."""
  if not warnings:
    return 'Sanity checks: no warnings.'
  return '\n'.join(
      ['Sanity checks: WARNINGS'] + [f'- WARNING: {w}' for w in warnings]
  )


def write_json(path, obj):
  """Writes obj as JSON (process 0 only), creating the folder."""
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
      json.dump(obj, f, indent=2)


def write_text(path, text):
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
      f.write(text.rstrip('\n') + '\n')


def write_report(records, workdir, name='eval'):
  """Writes <workdir>/<name>.json ({"records": [...], "warnings": [...]})
  and <name>.md; returns the markdown: the table, then the sanity flags."""
  warnings = sanity.sanity_flags(records)
  text = markdown_table(records) + '\n\n' + warnings_markdown(warnings)
  write_json(
      os.path.join(workdir, f'{name}.json'),
      {'records': records, 'warnings': warnings},
  )
  write_text(os.path.join(workdir, f'{name}.md'), text)
  return text
