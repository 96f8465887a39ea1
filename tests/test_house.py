"""The house keeps its shape: SQL lives only in the table owners (edge/store/).

The import rules (domain without I/O, no cycles, adapters independent) are import-linter
contracts in pyproject.toml, run by .ci/run (`lint-imports`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

EDGE = Path(__file__).resolve().parent.parent / "edge"

# A statement, not prose: uppercase keywords in the shape SQL takes.
_SQL = re.compile(r"^\s*(SELECT\s.+\sFROM\b|SELECT\s+\d|INSERT\s+(OR\s+\w+\s+)?INTO\s|"
                  r"UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|REPLACE\s+INTO\s)", re.DOTALL)
_EXECUTE = {"execute", "executemany", "executescript"}

def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def scan(source: str, rel: str) -> list[str]:
    """Every SQL statement in a module: in a string constant, or as the first argument of an
    execute call."""
    hits: list[str] = []
    tree = ast.parse(source)
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docs and _SQL.match(node.value):
            hits.append(f"{rel}:{node.lineno}: {node.value.strip()[:60]}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in _EXECUTE and node.args:
            text = ast.get_source_segment(source, node.args[0]) or ""
            if re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|REPLACE)\b", text):
                hits.append(f"{rel}:{node.lineno}: {node.func.attr}({text[:60]}")
    return hits


def sql_outside_the_store() -> list[str]:
    hits: list[str] = []
    for path in sorted(EDGE.rglob("*.py")):
        rel = path.relative_to(EDGE).as_posix()
        if rel.startswith("store/"):
            continue
        hits += scan(path.read_text("utf-8"), rel)
    return hits


def test_no_sql_outside_the_table_owners() -> None:
    assert sql_outside_the_store() == []


def test_the_check_finds_sql_where_it_does_not_belong() -> None:
    source = (
        '"""SELECT words FROM a docstring are prose."""\n'
        'Q = "SELECT job_key FROM print_jobs WHERE state=?"\n'
        'def f(conn, sql):\n'
        '    conn.execute(f"UPDATE orders SET status=? WHERE order_id={1}", ())\n'
        '    conn.execute("DELETE " + "FROM events")\n'
        '    conn.execute(sql)\n'
        '    return "select the printer"\n'
    )
    assert sorted(h.split(": ", 1)[0] for h in scan(source, "x.py")) == [
        "x.py:2", "x.py:4", "x.py:4", "x.py:5"]
