"""The README and the pages under docs/ hold as written: each Python snippet imports what it uses and the onnxruntime
one imports no torch (test_export.py runs it), the console snippets that need no data, no Ray and no training run
here and print what they show, every page is in mkdocs.yml's nav and the site builds in strict mode (no broken link
or anchor between pages), the README's links resolve, and the README stays a front door."""

from __future__ import annotations

import ast
import builtins
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
# Notes that other changes leave for these pages, folded in after a merge; mkdocs.yml excludes them too.
PENDING = DOCS / "pending"
PAGES = sorted(path for path in DOCS.rglob("*.md") if PENDING not in path.parents)
TEXTS = {path: path.read_text() for path in [ROOT / "README.md", *PAGES]}
SNIPPETS = [snippet for text in TEXTS.values() for snippet in re.findall(r"```python\n(.*?)```", text, re.DOTALL)]

# Commands that read a preset or a space file and print: no data set, no Ray, no training.
OFFLINE = ("profile", "show")
# The command line page's bad.yaml is not shipped: this one fails as it says (its "low > high").
FILES = {"bad.yaml": "family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, growth_rate: {low: 32, high: 12}}\n"}
README_MAX_LINES = 160


def console_commands() -> list[tuple[str, list[str]]]:
    """Each `$ cnnsearch profile|show ...` line of the console blocks, with the output lines shown under it."""
    commands = []
    for text in TEXTS.values():
        for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
            for chunk in re.split(r"^(?=\$ )", block, flags=re.MULTILINE):
                command, _, output = chunk.partition("\n")
                words = shlex.split(command[2:], comments=True) if command.startswith("$ ") else []
                if words[:1] == ["cnnsearch"] and len(words) > 1 and words[1] in OFFLINE:
                    commands.append((command[2:], output.splitlines()))
    return commands


COMMANDS = console_commands()


def test_the_offline_console_snippets_are_found():
    assert {shlex.split(command)[1] for command, _ in COMMANDS} == set(OFFLINE) and len(COMMANDS) >= 4


@pytest.mark.parametrize("command, shown", COMMANDS, ids=[command for command, _ in COMMANDS])
def test_console_snippet_prints_what_the_page_shows(command, shown, cli, tmp_path, monkeypatch):
    """Run from a folder with the repository's spaces/ and the pages' other files; output shown is output printed."""
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


def nav_pages(entry) -> list[str]:
    """The page files that a mkdocs.yml nav entry (a list, a {title: ...} mapping or a file) names."""
    if isinstance(entry, list):
        return [page for item in entry for page in nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in nav_pages(value)]
    return [entry]


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert sorted(nav) == sorted(path.relative_to(DOCS).as_posix() for path in PAGES)
    assert len(nav) == len(set(nav))


def test_the_site_builds_in_strict_mode(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           check=False, cwd=ROOT, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    assert {path.name for path in (tmp_path / "site").iterdir()} >= {"index.html", "search", "cluster"}


def anchors(text: str) -> set[str]:
    """The ids MkDocs gives a page's headings (code fences skipped; inline code's backticks dropped)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return {slugify(heading.replace("`", ""), "-") for heading in re.findall(r"^#+ +(.+?)\s*$", prose, re.MULTILINE)}


def test_the_readme_links_resolve():
    links = re.findall(r"\]\(([^)\s]+)\)", TEXTS[ROOT / "README.md"])
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= len(PAGES), "the README links to each page"
    for link in local:
        name, _, anchor = link.partition("#")
        target = ROOT / name
        assert target.is_file(), f"README.md links to {link}, which is not a file of this repository"
        assert not anchor or anchor in anchors(target.read_text()), f"README.md links to {link}: no such heading"


def test_the_readme_is_a_front_door():
    lines = TEXTS[ROOT / "README.md"].splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move the detail into docs/"


def test_no_document_names_a_path_of_the_developers_machines():
    """Their data folder and scratch space: a user has neither. Data is described as what it is (docs/benchmarks.md)."""
    documents = [*TEXTS, ROOT / "BENCHMARKS.md", ROOT / "constraints.txt", ROOT / "experiments" / "README.md"]
    for path in documents:
        text = path.read_text()
        where = path.relative_to(ROOT)
        assert "shared/" not in text and "/tmp/" not in text, f"{where} names a path of the developers' machines"
