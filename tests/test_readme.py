"""The README's Python snippets run as written: each imports what it uses; the onnxruntime one needs no torch."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_every_snippet_defines_the_names_it_uses():
    assert len(SNIPPETS) >= 4
    for snippet in SNIPPETS:
        tree = ast.parse(snippet)
        defined = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                defined |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        assert used <= defined, f"{sorted(used - defined)} used but not defined in:\n{snippet}"


def onnxruntime_snippet() -> str:
    (snippet,) = [s for s in SNIPPETS if "onnxruntime.InferenceSession" in s]
    return snippet


def test_the_onnxruntime_snippet_imports_no_torch():
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(onnxruntime_snippet()))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert "onnxruntime" in imported and not imported & {"torch", "cnnsearch"}
