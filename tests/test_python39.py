"""Python 3.9 (the oldest version pyproject.toml allows) can run every module of the repository.

ruff (target py39, rule FA102) catches ``X | None`` annotations that 3.9 would evaluate. This
catches what ruff does not: syntax newer than 3.9 (``match``, ``except*``), and type unions
(``int | None``) evaluated at run time outside annotations, e.g. in ``isinstance`` or a type
alias, which only Python 3.10 accepts.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {'.venv', 'work_dirs', 'data', 'build', '.git', 'node_modules'}
BUILTIN_TYPES = {'bool', 'bytes', 'dict', 'float', 'frozenset', 'int', 'list', 'object', 'set',
                 'str', 'tuple', 'type'}


def python_files() -> list[Path]:
    return sorted(p for p in REPO_ROOT.rglob('*.py')
                  if not SKIPPED_DIRS.intersection(p.relative_to(REPO_ROOT).parts))


def _is_type(node: ast.expr) -> bool:
    """``None``, a builtin type or a union / subscript of them: an operand only a type union
    (never a bitwise or) has."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in BUILTIN_TYPES
    if isinstance(node, ast.Subscript):
        return _is_type(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_type(node.left) or _is_type(node.right)
    return False


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """ids of every node inside an annotation (not evaluated with the future import)."""
    inside = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            annotations = [a.annotation for a in [*args.posonlyargs, *args.args,
                                                  *args.kwonlyargs, args.vararg, args.kwarg]
                           if a is not None and a.annotation is not None]
            annotations += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in annotations:
            inside.update(id(n) for n in ast.walk(annotation))
    return inside


def _has_future_annotations(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == '__future__'
               and any(alias.name == 'annotations' for alias in node.names)
               for node in tree.body)


def runtime_type_unions(source: str) -> list[str]:
    """``X | Y`` type unions that Python 3.9 would evaluate, as ``line: expression``."""
    tree = ast.parse(source)
    lazy = _annotation_nodes(tree) if _has_future_annotations(tree) else set()
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)
                and id(node) not in lazy and (_is_type(node.left) or _is_type(node.right))):
            found.append(f'{node.lineno}: {ast.unparse(node)}')
    return found


def test_the_checks_find_what_python39_rejects():
    assert runtime_type_unions('def f(x: int | None): pass\n') == ['1: int | None']
    assert runtime_type_unions('from __future__ import annotations\n'
                               'def f(x: int | None) -> list[str] | None: pass\n') == []
    assert runtime_type_unions('from __future__ import annotations\n'
                               'ok = isinstance(1, int | str)\n') == ['2: int | str']
    assert runtime_type_unions('Alias = dict[str, int] | None\nflags = A | B\n') == [
        '1: dict[str, int] | None']
    with pytest.raises(SyntaxError):
        ast.parse('match x:\n    case 1:\n        pass\n', feature_version=(3, 9))


@pytest.mark.parametrize('path', python_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_module_runs_on_python39(path):
    source = path.read_text()
    ast.parse(source, filename=str(path), feature_version=(3, 9))
    assert runtime_type_unions(source) == [], path
