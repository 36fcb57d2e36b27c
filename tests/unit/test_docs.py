"""The README, the docs/ pages and the scripts' options agree (after sqlite-utils' tests/test_docs.py).

Every option of every script appears in README.md or a docs/ page, and every `--option` they
name for a script exists in that script's parser. Each page is read on its own, by the rules
below; an option no rule attributes falls to the README's main script. Every relative link
resolves, to a file and, with a #fragment, to one of its headings. The scripts are every top-level *.py that
defines both `build_parser` and `main`, so a new script is covered by being written.

Which script a README mention belongs to: an option in a command (`python3 x.py --opt`, in
a code block or inline; indented lines continue a command in a code block) belongs to that
command's script. An option in prose belongs to the script last named before it in the same
paragraph (a list item and a table row are paragraphs of their own), else to the script of
the section's last command before it, else to the script named in the section's heading,
else to the README's main script (the one its first command runs). Output lines inside code
blocks are not read. Options of tools that are not scripts here (bench/, tools/, the
emulator) are not checked.
"""
from __future__ import annotations

import argparse
import ast
import glob
import importlib
import os
import re
from dataclasses import dataclass

import pytest

from helpers import ROOT

README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
PAGES = [README, *DOCS]                                   # a user's pages: their options are checked
LINKED = [*PAGES, *(os.path.join(ROOT, name) for name in ("CONTRIBUTING.md", "CHANGELOG.md"))]
# a script file, a module run with `python3 -m module` (not a script here: its options are not
# checked), or an installed command (`devrev-merge-contacts` is merge_contacts.py)
_SCRIPT = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.py\b|(?<=-m )[\w.]+|devrev-[a-z-]+\b)")
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_INLINE_CODE = re.compile(r"`([^`]+)`")
_HEADING = re.compile(r"^(#+)\s+(.*)$")
_COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:python3?\s|devrev-)")   # runs python or a command; a bare name is prose


def _script_of(name: str) -> str:
    """An installed command's script (devrev-merge-contacts: merge_contacts.py); else the name."""
    return name[len("devrev-"):].replace("-", "_") + ".py" if name.startswith("devrev-") else name


def discover_scripts() -> list[str]:
    """Every top-level *.py defining both build_parser() and main()."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "*.py"))):
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        if {"build_parser", "main"} <= names:
            found.append(os.path.basename(path))
    return found


SCRIPTS = discover_scripts()


def parser_options(script: str) -> set[str]:
    parser = importlib.import_module(script[:-3]).build_parser()
    return {option for action in parser._actions if not isinstance(action, argparse._HelpAction)
            for option in action.option_strings if option.startswith("--")}


@dataclass(frozen=True)
class Mention:
    option: str
    script: str
    line: int


def _commands_in(text: str) -> list[tuple[int, int, str]]:
    """(start, end, script) spans of a command's text: from a script name to the end of the
    text or the next script name (`a.py ... && b.py ...`)."""
    names = list(_SCRIPT.finditer(text))
    return [(m.start(), names[i + 1].start() if i + 1 < len(names) else len(text), _script_of(m.group(1)))
            for i, m in enumerate(names)]


def _inline_commands(text: str) -> list[tuple[int, int, str]]:
    """The commands in a line's inline code, as (start, end, script) positions in the line."""
    spans = []
    for code in _INLINE_CODE.finditer(text):
        if _COMMAND.match(code.group(1)):
            spans += [(code.start(1) + s, code.start(1) + e, script) for s, e, script in _commands_in(code.group(1))]
    return spans


def _prose_mentions(text: str, lineno: int, state: dict) -> list[Mention]:
    """Options in one line of prose, the commands in its inline code included."""
    spans = _inline_commands(text)
    events = []                                            # (position in the line, kind, value)
    for start, end, script in spans:
        events.append((start, "command", script))
        events += [(start + m.start(), "command option", (m.group(), script))
                   for m in _OPTION.finditer(text[start:end])]
    prose = "".join(" " if any(s <= i < e for s, e, _ in spans) else c for i, c in enumerate(text))
    events += [(m.start(), "script", _script_of(m.group(1))) for m in _SCRIPT.finditer(prose)]
    events += [(m.start(), "option", m.group()) for m in _OPTION.finditer(prose)]
    found = []
    for _pos, kind, value in sorted(events, key=lambda event: event[0]):
        if kind == "command":
            state["paragraph_script"] = state["section_command"] = value
            state.setdefault("main", value)
        elif kind == "script":
            state["paragraph_script"] = value
        elif kind == "command option":
            found.append(Mention(value[0], value[1], lineno))
        else:
            owner = state["paragraph_script"] or state["section_command"] or state["heading_script"]
            found.append(Mention(value, owner or "<main>", lineno))
    return found


def readme_mentions(path: str = README, main: str | None = None) -> list[Mention]:
    """Every option a page names, with the script it belongs to; `main`: the script an option
    no rule attributes falls to (default: the page's first command's)."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    mentions: list[Mention] = []
    state = {"paragraph_script": None, "section_command": None, "heading_script": None}
    in_code = False
    command = None                                          # (script, indent) of the code block's open command
    for lineno, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            in_code, command = not in_code, None
            continue
        if in_code:
            indent = len(line) - len(line.lstrip())
            names = _commands_in(line) if _COMMAND.match(line) else []
            if names:
                start, _end, script = names[0]
                command = (script, indent)
                state["section_command"] = script
                state.setdefault("main", script)
                for start, end, script in names:
                    mentions += [Mention(m.group(), script, lineno) for m in _OPTION.finditer(line[start:end])]
            elif command and line.strip() and indent > command[1]:
                mentions += [Mention(m.group(), command[0], lineno) for m in _OPTION.finditer(line)]
            else:
                command = None                              # output, or a listing: not read
            continue
        heading = _HEADING.match(line)
        if heading:
            named = [_script_of(n) for n in _SCRIPT.findall(heading.group(2))]
            state.update(paragraph_script=None, section_command=None, heading_script=named[0] if named else None)
            continue
        if not line.strip() or line.lstrip().startswith(("- ", "* ", "|")) or re.match(r"\s*\d+\.\s", line):
            state["paragraph_script"] = None                # a new paragraph, list item or table row
        mentions += _prose_mentions(line, lineno, state)
    main = main or state.get("main")
    return [Mention(m.option, main, m.line) if m.script == "<main>" else m for m in mentions]


def all_mentions() -> dict[str, list[Mention]]:
    """The mentions of every page (README.md, docs/*.md), by page."""
    readme = readme_mentions(README)
    main = next((m.script for m in readme if m.script.endswith(".py")), None)
    return {README: readme, **{page: readme_mentions(page, main) for page in PAGES[1:]}}


PAGE_MENTIONS = all_mentions()
MENTIONS = [m for mentions in PAGE_MENTIONS.values() for m in mentions]


def test_the_scripts_are_discovered():
    assert {"merge_contacts.py", "create_test_sample.py", "verify_backups.py"} <= set(SCRIPTS)
    assert "devrev_client.py" not in SCRIPTS and "backup.py" not in SCRIPTS   # library modules: no build_parser


@pytest.mark.parametrize("script, option", sorted((s, o) for s in SCRIPTS for o in parser_options(s)))
def test_every_option_is_in_the_readme(script, option):
    assert any(m.script == script and m.option == option for m in MENTIONS), \
        f"{script} {option} is not documented in README.md or docs/"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_the_readme_names_exists(script):
    known = parser_options(script)
    unknown = sorted({f"{os.path.relpath(page, ROOT)} line {m.line}: {m.option}"
                      for page, mentions in PAGE_MENTIONS.items() for m in mentions
                      if m.script == script and m.option not in known})
    assert not unknown, f"the docs name options {script} does not have: {', '.join(unknown)}"


def _anchors(page: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    with open(page, encoding="utf-8") as fh:
        headings = [m.group(2) for line in fh if (m := _HEADING.match(line))]
    return {re.sub(r"[^\w\- ]", "", h.lower().replace("`", "")).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", LINKED, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_resolves(page):
    with open(page, encoding="utf-8") as fh:
        links = re.findall(r"\]\(([^)\s]+)\)", fh.read())
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue                                   # https://..., mailto:
        target, _, fragment = link.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
        if not os.path.exists(path):
            broken.append(link)
        elif fragment and path.endswith(".md") and fragment not in _anchors(path):
            broken.append(link)
    assert not broken, f"{os.path.relpath(page, ROOT)}: broken links {broken}"


def test_the_readme_links_every_docs_page():
    with open(README, encoding="utf-8") as fh:
        readme = fh.read()
    assert [page for page in DOCS if f"docs/{os.path.basename(page)}" not in readme] == []


def test_the_reader_attributes_options_as_documented(tmp_path):
    """The attribution rules on a small README, so a wrong option cannot hide behind them."""
    readme = tmp_path / "README.md"
    readme.write_text("\n".join([
        "# Tool",                                                   # 1
        "```",
        "python3 one.py --alpha",                                   # 3: a command
        "    [--beta N]",                                           # 4: its continuation
        "output: --not-an-option",                                  # 5: output, not read
        "```",
        "Then `--gamma` is one's, `python3 two.py --delta` two's, after it `--eps` two's; `one.py` is a name.",  # 7
        "- `--zeta`: a list item, after the section's last command (not a name): two's",  # 8
        "## Using three.py",                                        # 9
        "| `--eta` | the heading's script |",                     # 10
        "## Elsewhere",                                             # 11
        "`--theta` falls to the main script; `bench/x.py --iota` is bench's.",  # 12
    ]), encoding="utf-8")
    got = {(m.option, m.script, m.line) for m in readme_mentions(str(readme))}
    assert got == {("--alpha", "one.py", 3), ("--beta", "one.py", 4), ("--gamma", "one.py", 7),
                   ("--delta", "two.py", 7), ("--eps", "two.py", 7), ("--zeta", "two.py", 8),
                   ("--eta", "three.py", 10), ("--theta", "one.py", 12), ("--iota", "bench/x.py", 12)}
