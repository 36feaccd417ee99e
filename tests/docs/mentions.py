"""What the Markdown documents mention: `sparkops` command lines, headings, panel titles.

The documents are read, not rendered: inline code spans (which may wrap across lines) and
fenced code blocks are where command lines live; `## Heading` lines give the anchors a
Markdown renderer makes; `panel "Title"` is how a document cites a dashboard panel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import click

from sparkops.artefacts import REPO_ROOT

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
# `sparkops` as a program name: at the start, after a space, a path (`.venv/bin/sparkops`)
# or an opening bracket, and followed by an argument (so "sparkops/defaults.py" is a path).
PROGRAM = re.compile(r"(?:^|(?<=[\s/(]))sparkops[ \t\n]+(?=\S)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
PANEL = re.compile(r"\bpanels?\s+\"([^\"]+)\"")
# Where a shell command line ends.
STOPS = {"&&", "||", ";", ">", ">>", "2>&1", "#", "--"}
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_=.,:-]*|<[^>]*>?|\[.*|\.\.\.|\S*[<>{}].*)$")


def documents() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def code_texts(text: str) -> list[str]:
    """Fenced blocks (one entry per line) and inline code spans, in document order."""
    out: list[str] = []
    for block in FENCE.findall(text):
        # In a listing, a run of spaces separates a command from what it does.
        out.extend(
            re.split(r"\s{2,}", line.strip())[0] for line in block.splitlines() if line.strip()
        )
    for span in INLINE.findall(FENCE.sub("", text)):
        out.append(" ".join(span.split()))
    return out


@dataclass(frozen=True)
class Mention:
    """One `sparkops ...` command line found in a document."""

    source: str
    text: str


def command_mentions(path: Path) -> list[Mention]:
    found = []
    for code in code_texts(path.read_text()):
        for match in PROGRAM.finditer(code):
            rest = code[match.end() :]
            found.append(Mention(str(path.relative_to(REPO_ROOT)), "sparkops " + rest))
    return found


def _clean(token: str) -> str:
    token = token.strip("[](),.;:'\"")
    return token.split("=", 1)[0]


def _option_names(cmd: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in cmd.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def check_command(root: click.Group, line: str) -> list[str]:
    """What in one `sparkops ...` line is not in the command tree (empty: all of it is).

    Words after a group must be its subcommands; words after a command are its arguments.
    `a|b` (and `a | b`, `a \\| b`) lists alternatives: a word after a bar is a sibling
    subcommand (looked up in the nearest group that has it), a flag after a bar belongs to
    the same command, and anything else ends the line (a shell pipe).
    """
    line = re.sub(r"\$\([^)]*\)", "", line)  # a shell substitution is not ours
    tokens = line.replace("\\|", " | ").split()[1:]
    problems: list[str] = []
    chain: list[click.Command] = [root]
    after_bar = False
    for raw in tokens:
        if raw in STOPS or raw.startswith("#"):
            break
        if raw == "|":
            after_bar = True
            continue
        token = _clean(raw)
        if not token:
            continue
        if token.startswith("-"):
            after_bar = False
            for flag in token.split("|"):
                flag = _clean(flag)
                if flag.startswith("-") and flag not in _option_names(chain[-1]):
                    problems.append(f"{' '.join(c.name for c in chain)}: no option {flag}")
            continue
        alternatives = token.split("|")
        listing = len(alternatives) > 1 and isinstance(chain[-1], click.Group)
        if after_bar or listing:
            groups = [g for g in reversed(chain) if isinstance(g, click.Group)]
            owners = [next((g for g in groups if alt in g.commands), None) for alt in alternatives]
            if after_bar and len(alternatives) == 1 and owners[0] is None:
                break  # a shell pipe into another program
            for alt, owner in zip(alternatives, owners, strict=True):
                if owner is None and not PLACEHOLDER.match(alt):
                    problems.append(
                        f"{' '.join(c.name for c in chain)}: no subcommand {alt} in {token}"
                    )
            if len(alternatives) == 1:
                chain = [*chain[: chain.index(owners[0]) + 1], owners[0].commands[token]]
            after_bar = False
            continue
        current = chain[-1]
        if isinstance(current, click.Group):
            if token in current.commands:
                chain.append(current.commands[token])
            elif not PLACEHOLDER.match(raw.strip("`")):
                problems.append(f"{' '.join(c.name for c in chain)}: no subcommand {token}")
                break
        # A word after a command is one of its arguments.
    return problems


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most renderers) make from a heading's text."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {github_anchor(h) for h in HEADING.findall(FENCE.sub("", path.read_text()))}


def cited_panels(path: Path) -> list[str]:
    return PANEL.findall(" ".join(path.read_text().split()))
