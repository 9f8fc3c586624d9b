"""Check that the docs cover every command, option and JSON key, and that the links of the docs resolve.

The checks read Markdown files and the argparse parser, and run each JSON command once on the linear
activation `x`, so they stay fast.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from lora_theory.cli import _build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_REFERENCE = ROOT / "docs" / "cli.md"
MARKDOWN_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
OPTION_ROW = re.compile(r"^\|\s*`(--[a-z0-9-]+)`", re.MULTILINE)


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Return the subcommand parsers by name: the commands that ``lora-theory --help`` lists."""
    parser = _build_parser()
    (subparsers,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


COMMANDS = _commands()


def _documented_options(parser: argparse.ArgumentParser) -> list[str]:
    """Return the long options of a command, without --help and without options hidden from --help."""
    options = []
    for action in parser._actions:
        # report --full-size exists for the tests and is hidden with argparse.SUPPRESS.
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        options += [option for option in action.option_strings if option.startswith("--")]
    return options


def _without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def _sections(text: str) -> dict[str, str]:
    """Split Markdown at its level-2 headings and map each heading's text to the section below it."""
    positions = [match for match in re.finditer(r"^## (.+)$", text, re.MULTILINE) if not _inside_fence(text, match.start())]
    sections = {}
    for index, match in enumerate(positions):
        end = positions[index + 1].start() if index + 1 < len(positions) else len(text)
        sections[match.group(1).strip()] = text[match.end():end]
    return sections


def _inside_fence(text: str, position: int) -> bool:
    return any(block.start() <= position < block.end() for block in FENCE.finditer(text))


def _github_anchor(heading: str) -> str:
    """Return the GitHub-style anchor of a heading: lower case, punctuation dropped, spaces as hyphens.

    NOTE: headings with HTML or emoji may get other anchors on GitHub; the docs have none.
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Return every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(_without_code_blocks(path.read_text(encoding="utf-8"))):
        anchor = _github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def _relative_links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", _without_code_blocks(path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not URL_SCHEME.match(target)]


CLI_SECTIONS = _sections(CLI_REFERENCE.read_text(encoding="utf-8"))


# --- docs/cli.md against the parser ---------------------------------------------


def test_parser_has_commands():
    # Guards the tests below against an empty parametrisation.
    assert {"tau", "report", "simulate", "escape", "latex"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_has_section(command):
    assert command in CLI_SECTIONS, f"docs/cli.md has no section '## {command}'"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options_documented(command):
    section = CLI_SECTIONS.get(command, "")
    missing = [option for option in _documented_options(COMMANDS[command]) if f"`{option}`" not in section]
    assert not missing, f"docs/cli.md section '## {command}' does not document {missing}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_stale_options(command):
    section = CLI_SECTIONS.get(command, "")
    known = set(_documented_options(COMMANDS[command]))
    stale = [option for option in OPTION_ROW.findall(section) if option not in known]
    assert not stale, f"docs/cli.md section '## {command}' documents options that {command} does not have: {stale}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_section_has_synopsis(command):
    synopsis = re.search(rf"^```\nlora-theory {re.escape(command)}\b", CLI_SECTIONS.get(command, ""), re.MULTILINE)
    assert synopsis is not None, f"docs/cli.md section '## {command}' has no synopsis block 'lora-theory {command} ...'"


# --- README JSON schemas -----------------------------------------------------


def _json_commands() -> list[str]:
    commands = []
    for name, parser in COMMANDS.items():
        for action in parser._actions:
            if "--format" in action.option_strings and "json" in (action.choices or ()):
                commands.append(name)
    return sorted(commands)


def test_json_commands_exist():
    # Guards the next test against an empty parametrisation.
    assert "tau" in _json_commands()


@pytest.mark.parametrize("command", _json_commands())
def test_readme_lists_json_schema(command):
    readme_sections = _sections(README.read_text(encoding="utf-8"))
    assert "JSON output schemas" in readme_sections, "README.md has no section '## JSON output schemas'"
    link = f"[`{command}`](docs/cli.md#{_github_anchor(command)})"
    assert link in readme_sections["JSON output schemas"], f"README.md 'JSON output schemas' has no entry {link}"


# Small invocations of every command with JSON output; each runs in well under a second with `x`.
JSON_EXAMPLES = {
    "tau": ["tau", "--student", "x", "--mu", "0.5"],
    "escape": ["escape", "--student", "x", "--mu", "0.5", "--d", "100", "--lr", "0.1", "--batch", "10", "--method", "linear"],
    "fixed-points": ["fixed-points", "--student", "x", "--mu", "0.5"],
    "search": ["search", "--student", "x", "--mu", "0.5", "--m0", "1e-6,1e-3"],
    "phase-diagram": ["phase-diagram", "--k-max", "1", "--mu", "0.5"],
    "scaling": ["scaling", "--teacher", "x", "--d", "100,1000"],
}


def test_json_examples_cover_commands():
    assert sorted(JSON_EXAMPLES) == _json_commands()


def _readme_schema_entry(command: str) -> str:
    section = _sections(README.read_text(encoding="utf-8")).get("JSON output schemas", "")
    match = re.search(rf"^- \[`{re.escape(command)}`\].*?(?=^- |\Z)", section, re.MULTILINE | re.DOTALL)
    return match.group(0) if match else ""


@pytest.mark.parametrize("command", sorted(JSON_EXAMPLES))
def test_json_keys_documented(command, capsys):
    status = main(JSON_EXAMPLES[command] + ["--format", "json"])
    output = capsys.readouterr().out
    assert status == 0, f"lora-theory {' '.join(JSON_EXAMPLES[command])} --format json exited with {status}"

    document = json.loads(output)
    row_keys = set(document["rows"][0]) if document["rows"] else set()
    keys = sorted(set(document) | row_keys)
    readme_entry = " ".join(_readme_schema_entry(command).split())
    reference = CLI_SECTIONS.get(command, "")
    missing_in_readme = [key for key in keys if f'"{key}"' not in readme_entry]
    missing_in_reference = [key for key in keys if f"`{key}`" not in reference]
    assert not missing_in_readme, f"README.md 'JSON output schemas' entry for {command} lacks the keys {missing_in_readme}"
    assert not missing_in_reference, f"docs/cli.md section '## {command}' lacks the JSON keys {missing_in_reference}"


# --- links ---------------------------------------------------------------------


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in _relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading with anchor #{anchor} in {linked.name})")
    assert not broken, f"{path.relative_to(ROOT)} has broken links: {broken}"


def test_link_scan_finds_links():
    # Guards test_relative_links_resolve against a pattern that matches nothing.
    assert "docs/cli.md" in _relative_links(README)
    assert "theory.md#cache" in _relative_links(CLI_REFERENCE)


def test_anchor_matches_github():
    assert _github_anchor("Singular μ and the critical alignment") == "singular-μ-and-the-critical-alignment"
    assert _github_anchor("`fixed-points`") == "fixed-points"
    assert _github_anchor("Results, 2026-12-04") == "results-2026-12-04"
