"""The layout of the tests holds: a test module never imports another test module (or the
conftest, which pytest loads itself); what tests share lives in ``tests/helpers``. No test loads
a script under ``tools/`` by file path to call its functions: tool logic is library code in
dat_det, and a test that needs a script runs it as a program (a subprocess, or
``runpy.run_path(path, run_name='__main__')`` in a forked child, as ``tests/helpers/forked_runs``
does).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# callables that turn a file into a module object whose functions the caller then uses
LOADERS = {'spec_from_file_location', 'SourceFileLoader', 'SourcelessFileLoader',
           'ExtensionFileLoader', 'load_source', 'load_module'}


def _is_test_module(dotted: str) -> bool:
    return any(part.startswith('test_') or part == 'conftest' for part in dotted.split('.'))


def _package(path: str) -> list[str]:
    """The package of a file at ``path`` (relative to the repository root) as its parts."""
    return list(Path(path).with_suffix('').parts[:-1])


def _imported_modules(node: ast.AST, path: str) -> list[str]:
    """The dotted names an import statement imports (relative ones resolved from ``path``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ''
    if node.level:
        package = _package(path)
        package = package[:len(package) - node.level + 1]
        base = '.'.join(package + ([node.module] if node.module else []))
    # ``from package import module`` imports the module too
    return [base] + [f'{base}.{alias.name}' for alias in node.names]


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')


def _runs_as_program(call: ast.Call, parent: ast.AST) -> bool:
    """``runpy.run_path(..., run_name='__main__')`` as a statement of its own: the script
    runs as ``python script`` would, and nothing of its namespace is used."""
    run_name = next((k.value for k in call.keywords if k.arg == 'run_name'), None)
    return (isinstance(parent, ast.Expr) and isinstance(run_name, ast.Constant)
            and run_name.value == '__main__')


def layout_problems(source: str, path: str) -> list[str]:
    """What in ``source`` (the file at ``path`` relative to the repository root) breaks the
    layout: ``'<path>:<line>: <what>'`` for each import of a test module or the conftest, each
    load of a Python file as a module, each ``runpy`` call that does not just run a script as
    ``__main__``, and each change of ``sys.path``."""
    tree = ast.parse(source, filename=path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    problems = []
    for node in ast.walk(tree):
        where = f'{path}:{getattr(node, "lineno", 0)}'
        for module in _imported_modules(node, path):
            if _is_test_module(module):
                problems.append(f'{where}: imports the test module {module}; move what it '
                                'shares to tests/helpers')
                break
        if not isinstance(node, ast.Call):
            continue
        callee = _callee(node)
        if callee in LOADERS:
            problems.append(f'{where}: {callee} loads a file as a module; import library code '
                            'from dat_det or run the script as a program')
        elif callee in ('run_path', 'run_module') and not _runs_as_program(node,
                                                                             parents[node]):
            problems.append(f'{where}: runpy.{callee} keeps the script\'s namespace; run it as '
                            "a program (run_name='__main__', result unused) or a subprocess")
        elif (callee in ('insert', 'append', 'extend') and isinstance(node.func, ast.Attribute)
              and ast.unparse(node.func.value) == 'sys.path'):
            problems.append(f'{where}: changes sys.path (scripts under tools/ are not modules '
                            'to import)')
    return problems


def test_no_test_imports_a_test_module_or_loads_a_script_by_path():
    root = TESTS.parent
    problems = []
    for file in sorted(TESTS.rglob('*.py')):
        path = file.relative_to(root).as_posix()
        problems += layout_problems(file.read_text(), path)
    assert not problems, '\n'.join(problems)


@pytest.mark.parametrize('source, path', [
    ('from tests.models.test_dino import tiny_dino_cfg', 'tests/models/test_x.py'),
    ('import tests.ops.test_msda_registration as registration', 'tests/ops/test_x.py'),
    ('from tests.tools import test_train_test', 'tests/tools/test_x.py'),
    ('from .test_train_test import data_options', 'tests/tools/test_x.py'),
    ('from . import test_train_test', 'tests/tools/test_x.py'),
    ('from ..models.test_dat_backbone import build_dat', 'tests/tools/test_x.py'),
    ('from tests.conftest import REPO_ROOT', 'tests/tools/test_x.py'),
    ('import test_dino', 'tests/models/test_x.py'),
    ("spec = importlib.util.spec_from_file_location('train', 'tools/train.py')",
     'tests/tools/test_x.py'),
    ("module = SourceFileLoader('train', str(TOOLS / 'train.py')).load_module()",
     'tests/tools/test_x.py'),
    ("build_cfg = runpy.run_path('tools/train.py')['build_cfg']", 'tests/tools/test_x.py'),
    ("runpy.run_path('tools/train.py')", 'tests/tools/test_x.py'),
    ("namespace = runpy.run_path('tools/train.py', run_name='__main__')",
     'tests/tools/test_x.py'),
    ("sys.path.insert(0, str(REPO_ROOT / 'tools'))\nimport train", 'tests/tools/test_x.py'),
])
def test_layout_check_flags_a_bad_source(source, path):
    assert layout_problems(source, path)


@pytest.mark.parametrize('source', [
    'from tests.helpers.tiny_configs import TINY_DAT',
    'from tests.helpers import REPO_ROOT',
    'from .helpers.msda_inputs import make_msda_inputs',
    'from torch.testing import assert_close',
    "runpy.run_path(str(REPO_ROOT / 'tools' / script), run_name='__main__')",
    "subprocess.run([sys.executable, 'tools/train.py', config], check=True)",
    "from dat_det.engine import build_train_config",
])
def test_layout_check_passes_a_good_source(source):
    assert layout_problems(source, 'tests/test_x.py') == []
