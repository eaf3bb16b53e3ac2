"""The shape of the package (issue 10): no import cycles in jaxadv/ (lazy
imports inside functions count too) and no function longer than about 80
lines."""

import ast
import os

import pytest

ROOT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'jaxadv'
)
MAX_FUNCTION_LINES = 85


def _modules():
  """{dotted name: path} of every module of the package."""
  out = {}
  for folder, _, files in os.walk(ROOT):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))
        name = rel[:-3].replace(os.sep, '.')
        out[
            name[: -len('.__init__')] if name.endswith('__init__') else name
        ] = os.path.join(folder, f)
  return out


def import_graph():
  """{module: set of jaxadv modules it imports}, statically."""
  mods = _modules()
  graph = {}
  for name, path in mods.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    deps = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        deps.update(a.name for a in node.names if a.name in mods)
      elif (
          isinstance(node, ast.ImportFrom)
          and node.module
          and (node.module.startswith('jaxadv'))
      ):
        for a in node.names:
          sub = f'{node.module}.{a.name}'
          deps.add(sub if sub in mods else node.module)
    graph[name] = {d for d in deps if d != name}
  return graph


def find_cycle(graph):
  """A list of modules forming a cycle, or None."""
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 'open':
        return stack[stack.index(dep) :] + [dep]
      if dep not in state:
        cycle = visit(dep, stack)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node, [])
      if cycle:
        return cycle
  return None


def test_the_cycle_finder_finds_cycles():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [
      'a',
      'b',
      'c',
      'a',
  ]
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_no_import_cycles_in_the_package():
  graph = import_graph()
  assert 'jaxadv.train' in graph and 'jaxadv.build' in graph['jaxadv.train']
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_evaluation_does_not_import_the_trainer():
  graph = import_graph()

  def reach(start):
    seen, todo = set(), [start]
    while todo:
      for dep in graph.get(todo.pop(), ()):
        if dep not in seen:
          seen.add(dep)
          todo.append(dep)
    return seen

  for module in (
      'jaxadv.evaluation',
      'jaxadv.evaluation.evaluators',
      'jaxadv.evaluation.suite',
      'jaxadv.data',
      'jaxadv.tools.transfer',
      'jaxadv.runs',
      'jaxadv.eval_run',
      'jaxadv.tools.sweep',
      'jaxadv.build',
  ):
    assert 'jaxadv.train' not in reach(module), module
    assert 'jaxadv.loop' not in reach(module), module


def long_functions():
  out = []
  for name, path in _modules().items():
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES:
          out.append(f'{name}.{node.name}: {n} lines')
  return out


def test_functions_fit_on_a_screen():
  assert not long_functions()
