"""Every `pgchat …` command the README, the changelog and docs/ show exists, with its options.

A command is taken from fenced code blocks (where `pgchat` starts a shell command: at the start
of a line, after a `$ ` prompt, `VAR=value` assignments or a `.venv/bin/` path, or after `&&`,
`||`, `;`, `|`) and from inline code that starts with `pgchat `. Its subcommand path is walked
through the click groups; `pgchat <path> --help` (click's CliRunner) must succeed and list every
`--option` the text gives it. Placeholders (`ID`, `<user>`, `FILE`), option values and
`[ ]` / `|` around alternatives are ignored; a word where a subcommand is expected is not.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pgchat.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 30_000

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_SHELL_SPLIT = re.compile(r"&&|\|\||;|\||\$\(")
_PREFIX = re.compile(r"^\s*(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\S*/)?pgchat(?=\s|$)")
_OPTION = re.compile(r"^(--?[A-Za-z][\w-]*)")
_HELP_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Shown:
    """One command line as the text shows it: where, and its words after `pgchat`."""

    where: str
    text: str
    words: tuple[str, ...]


def _words(rest: str) -> tuple[str, ...]:
    rest = rest.replace("\\|", " ").replace("|", " ").replace("[", " ").replace("]", " ")
    rest = rest.replace("…", " ")
    try:
        return tuple(shlex.split(rest, comments=True))
    except ValueError:  # an unbalanced quote in prose: split on spaces
        return tuple(rest.split())


def extract(text: str, name: str = "<text>") -> list[Shown]:
    """The `pgchat …` command lines shown in markdown `text`."""
    found: list[Shown] = []
    blocks = list(_FENCE.finditer(text))
    for block in blocks:
        start_line = text.count("\n", 0, block.start(1)) + 1
        for offset, line in enumerate(block.group(1).splitlines()):
            for segment in _SHELL_SPLIT.split(line):
                segment = re.split(r"\s[<>]|^[<>]|\s\d?>", segment)[0]
                m = _PREFIX.match(segment)
                if m:
                    found.append(Shown(f"{name}:{start_line + offset}", segment.strip(),
                                       _words(segment[m.end():])))
    prose = _FENCE.sub(lambda b: "\n" * b.group(0).count("\n"), text)
    for m in _INLINE.finditer(prose):
        code = m.group(1).strip()
        if code.startswith("pgchat ") or code == "pgchat":
            line = prose.count("\n", 0, m.start()) + 1
            found.append(Shown(f"{name}:{line}", code, _words(code[len("pgchat"):])))
    return found


@cache
def _help(path: tuple[str, ...]) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*path, "--help"], env={"PGCHAT_DSN": None,
                                                              "DATABASE_URL": None})
    return result.exit_code, result.output


def _variants(words: list[str]) -> list[list[str]]:
    """`db start / stop` is two commands: `db start` and `db stop`."""
    if "/" not in words[1:-1]:
        return [words]
    i = words.index("/", 1)
    j = i + 1
    alternatives = [words[i - 1], words[j]]
    while j + 2 < len(words) and words[j + 1] == "/":
        j += 2
        alternatives.append(words[j])
    return [v for alt in alternatives for v in _variants([*words[:i - 1], alt, *words[j + 1:]])]


def problems(shown: Shown) -> list[str]:
    """What is wrong with one shown command: an unknown subcommand or option; [] if nothing."""
    return [p for words in _variants(list(shown.words)) for p in _problems(shown, words)]


def _problems(shown: Shown, words: list[str]) -> list[str]:
    command: click.Command = main
    path: list[str] = []
    options: list[str] = []
    while words:
        word = words.pop(0)
        m = _OPTION.match(word)
        if m:
            options.append(m.group(1).split("=")[0])
            continue
        if isinstance(command, click.Group) and not options:
            sub = command.commands.get(word)
            if sub is None:
                return [f"{shown.where}: `{shown.text}`: no command `pgchat "
                        f"{' '.join([*path, word])}`"]
            command, path = sub, [*path, word]
        # else: an argument, a placeholder or an option's value
    code, output = _help(tuple(path))
    if code != 0:
        return [f"{shown.where}: `pgchat {' '.join(path)} --help` exited {code}: {output}"]
    known = set(_HELP_OPTION.findall(output))
    return [f"{shown.where}: `{shown.text}`: `pgchat {' '.join(path)}` has no option {opt}"
            for opt in options if opt not in known]


def _shown_in_docs() -> list[Shown]:
    return [s for doc in DOCS for s in extract(doc.read_text(), str(doc.relative_to(ROOT)))]


def test_every_command_the_docs_show_exists() -> None:
    shown = _shown_in_docs()
    assert len(shown) >= 30, [s.text for s in shown]  # the extractor still finds them
    assert [p for s in shown for p in problems(s)] == []


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= README_LIMIT, len(readme)
    top = readme[:2_500]
    assert "make demo" in top and "make test" in top


# --- the extractor and the checker themselves ---------------------------------------------

SAMPLE = """\
Run `pgchat migrate --dry-run`, then `pgchat usage show <user> --from 2025-07-01`.
The table form: `pgchat rollback [--to ID \\| --steps N \\| --all] [--dry-run]`.
Not commands: `pgchat[cli]`, `pgchat.Client`, `pgchat_dev`, `--json`.

```sh
export PGCHAT_DSN='postgresql://u@h/db'
pgchat status                 # what is applied
.venv/bin/pgchat db url && PGCHAT_HOME=/tmp/x pgchat db stop --json
pgchat sql > pending.sql
$ pgchat migrate --lock-timeout=1s
```

```
pgchat: error: something went wrong
step        legacy  pgchat   true
```
"""


def test_the_extractor_finds_commands_in_code_blocks_and_inline_code() -> None:
    assert [s.words for s in extract(SAMPLE)] == [
        ("status",),
        ("db", "url"),
        ("db", "stop", "--json"),
        ("sql",),
        ("migrate", "--lock-timeout=1s"),
        ("migrate", "--dry-run"),
        ("usage", "show", "<user>", "--from", "2025-07-01"),
        ("rollback", "--to", "ID", "--steps", "N", "--all", "--dry-run"),
    ]
    assert _variants(["db", "start", "/", "stop", "/", "url", "--json"]) == [
        ["db", "start", "--json"], ["db", "stop", "--json"], ["db", "url", "--json"]]
    assert [p for s in extract(SAMPLE) for p in problems(s)] == []


@pytest.mark.parametrize(("text", "expected"), [
    ("`pgchat sql --everything`", "`pgchat sql` has no option --everything"),
    ("`pgchat frobnicate --json`", "no command `pgchat frobnicate`"),
    ("```sh\npgchat usage shw\n```", "no command `pgchat usage shw`"),
    ("```\n$ pgchat db start --port 5433\n```", "`pgchat db start` has no option --port"),
    ("`pgchat rollback [--to ID \\| --step N]`", "`pgchat rollback` has no option --step"),
    ("```sh\nmake demo && .venv/bin/pgchat migrate --dryrun\n```",
     "`pgchat migrate` has no option --dryrun"),
    ("`pgchat db start / halt / url`", "no command `pgchat db halt`"),
])
def test_the_checker_refuses_a_command_or_option_that_does_not_exist(text: str,
                                                                     expected: str) -> None:
    (shown,) = extract(text)
    found = problems(shown)
    assert len(found) == 1 and expected in found[0], found
