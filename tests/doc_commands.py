"""The commands that README.md and docs/*.md show, read from their code blocks.

A documented command is a line of a shell-like code block (fenced as
```bash, ```text, ```console, ``` ... or indented by four spaces) that
starts with `babelprune`, `python benchmarks/...` or `make`, after any
`VAR=value` prefixes. Backslash continuations are joined, `$ ` prompts
dropped and trailing `# comments` removed. In a block that uses `$ `
prompts, only the prompted lines are commands; the lines under one are the
output the docs show for it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parent.parent

# Fenced blocks in these languages hold shell lines; python blocks are snippets, not commands.
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text", "shell-session", "zsh"}
PROMPT = "$ "
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

CommandKind = Literal["babelprune", "benchmark", "make"]


@dataclass(frozen=True)
class DocCommand:
    """One documented command line: its canonical text, where it is, and what the docs show it print."""

    text: str
    file: str  # relative to the repository
    line: int
    kind: CommandKind
    shown_output: tuple[str, ...] = ()

    @property
    def tokens(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def env(self) -> dict[str, str]:
        """The `VAR=value` prefixes of the command."""
        return dict(token.split("=", 1) for token in self.tokens[: self._env_count()])

    @property
    def argv(self) -> list[str]:
        """The command itself, without the `VAR=value` prefixes."""
        return self.tokens[self._env_count() :]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def _env_count(self) -> int:
        count = 0
        while count < len(self.tokens) and ENV_ASSIGNMENT.match(self.tokens[count]):
            count += 1
        return count


@dataclass(frozen=True)
class CodeBlock:
    language: str  # the fence's info string ("" when none, "indented" for indented blocks)
    first_line: int  # 1-based line number of the block's first content line
    lines: tuple[str, ...]


def documentation_files(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def code_blocks(text: str) -> Iterator[CodeBlock]:
    """Fenced and indented code blocks of a Markdown text."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence:
            marker, language = fence.group(1), fence.group(2).lower()
            end = index + 1
            while end < len(lines) and not lines[end].strip().startswith(marker[0] * len(marker)):
                end += 1
            yield CodeBlock(language, index + 2, tuple(lines[index + 1 : end]))
            index = end + 1
            continue
        follows_blank = index == 0 or not lines[index - 1].strip()
        if follows_blank and lines[index].startswith("    ") and lines[index].strip():
            end = index
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            yield CodeBlock("indented", index + 1, tuple(line[4:] for line in lines[index:end]))
            index = end
            continue
        index += 1


def _logical_lines(block: CodeBlock) -> Iterator[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    pending, start = "", None
    for offset, raw in enumerate(block.lines):
        if start is None:
            start = block.first_line + offset
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending, start = "", None
    if start is not None:
        yield start, pending


def command_kind(argv: list[str]) -> CommandKind | None:
    if not argv:
        return None
    if argv[0] == "babelprune":
        return "babelprune"
    if argv[0] in ("python", "python3") and len(argv) > 1 and argv[1].startswith("benchmarks/"):
        return "benchmark"
    if argv[0] == "make":
        return "make"
    return None


def _parse_command(text: str) -> tuple[str, CommandKind] | None:
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # unbalanced quotes: prose, not a command
        return None
    argv = list(tokens)
    while argv and ENV_ASSIGNMENT.match(argv[0]):
        argv.pop(0)
    kind = command_kind(argv)
    return (shlex.join(tokens), kind) if kind else None


def block_commands(block: CodeBlock, file: str) -> Iterator[DocCommand]:
    """The documented commands of one shell-like block."""
    logical = list(_logical_lines(block))
    prompted = any(text.lstrip().startswith(PROMPT) for _, text in logical)
    for position, (line, text) in enumerate(logical):
        stripped = text.strip()
        if prompted:
            if not stripped.startswith(PROMPT):
                continue
            stripped = stripped[len(PROMPT) :]
        parsed = _parse_command(stripped)
        if parsed is None:
            continue
        command_text, kind = parsed
        output = _shown_output(logical[position + 1 :]) if prompted else ()
        yield DocCommand(command_text, file, line, kind, output)


def _shown_output(following: list[tuple[int, str]]) -> tuple[str, ...]:
    output = []
    for _, text in following:
        if text.lstrip().startswith(PROMPT) or not text.strip():
            break
        output.append(text.strip())
    return tuple(output)


def collect_commands(repo: Path = REPO) -> list[DocCommand]:
    """Every documented command, in the order of the files and of their lines."""
    commands = []
    for path in documentation_files(repo):
        relative = path.relative_to(repo).as_posix()
        for block in code_blocks(path.read_text(encoding="utf-8")):
            if block.language in SHELL_LANGUAGES or block.language == "indented":
                commands.extend(block_commands(block, relative))
    return commands


def unique_commands(commands: list[DocCommand]) -> list[DocCommand]:
    """The first place each command text is shown."""
    seen: dict[str, DocCommand] = {}
    for command in commands:
        seen.setdefault(command.text, command)
    return list(seen.values())


def python_block_after(path: Path, heading: str) -> str:
    """The first ```python block after the line that contains `heading`."""
    return code_block_after(path, heading, "python")


def code_block_after(path: Path, heading: str, language: str) -> str:
    """The first block in `language` (```yaml...) after the line that contains `heading`."""
    text = path.read_text(encoding="utf-8")
    start = text.index(heading)
    for block in code_blocks(text[start:]):
        if block.language == language:
            return "\n".join(block.lines) + "\n"
    raise LookupError(f"no {language} block after {heading!r} in {path}")
