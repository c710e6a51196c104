"""The README's snippets hold as written: each Python snippet imports what it uses and the onnxruntime one imports
no torch (test_export.py runs it), and the console snippets that need no data, no Ray and no training run here
and print what the README shows."""

from __future__ import annotations

import ast
import builtins
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)

# Commands that read a preset or a space file and print: no data set, no Ray, no training.
OFFLINE = ("profile", "show")
# The README's bad.yaml is not shipped: this one fails as it says (the README's "low > high").
FILES = {"bad.yaml": "family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, growth_rate: {low: 32, high: 12}}\n"}


def console_commands() -> list[tuple[str, list[str]]]:
    """Each `$ cnnsearch profile|show ...` line of the README's console blocks, with the output lines shown under it."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", README, re.S):
        for chunk in re.split(r"^(?=\$ )", block, flags=re.M):
            command, _, output = chunk.partition("\n")
            words = shlex.split(command[2:], comments=True) if command.startswith("$ ") else []
            if words[:1] == ["cnnsearch"] and len(words) > 1 and words[1] in OFFLINE:
                commands.append((command[2:], output.splitlines()))
    return commands


COMMANDS = console_commands()


def test_the_offline_console_snippets_are_found():
    assert {shlex.split(command)[1] for command, _ in COMMANDS} == set(OFFLINE) and len(COMMANDS) >= 4


@pytest.mark.parametrize("command, shown", COMMANDS, ids=[command for command, _ in COMMANDS])
def test_console_snippet_prints_what_the_readme_shows(command, shown, cli, tmp_path, monkeypatch):
    """Run from a folder that holds the repository's spaces/ and the README's other files; output shown is output printed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spaces").symlink_to(ROOT / "spaces")
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    status, out, err = cli(*shlex.split(command)[1:])
    printed = (out + err).splitlines()
    refused = bool(shown) and shown[0].startswith("cnnsearch: error:")
    assert status == (2 if refused else 0), err
    assert printed if not shown else printed == shown


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
