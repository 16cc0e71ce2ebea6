"""The one exception type users see.

Every error caused by bad input (a wrong model name, an unknown language, a
sparsity out of range...) is raised as `BabelpruneError` with one sentence
that says what was wrong and what to do. The CLI prints that sentence and
exits with status 2, without a traceback.
"""


class BabelpruneError(Exception):
    """A user-facing error: one sentence naming what was wrong and what to do."""


def refuse_existing_output(path) -> None:
    """Outputs are never overwritten: an existing `path` (folder or file) is refused before any work."""
    from pathlib import Path

    path = Path(path)
    if path.exists():
        kind = "folder" if path.is_dir() else "file"
        raise BabelpruneError(f"Output {kind} {path} exists; choose another --out or remove it.")


def describe_validation_error(error) -> str:
    """One sentence for a pydantic ValidationError: the first invalid field, its value and the rule it broke."""
    problems = error.errors(include_url=False)
    first = problems[0]
    field = ".".join(str(part) for part in first.get("loc", ())) or error.title
    message = first.get("msg", "is invalid").removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else message
    given = f" ({first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    more = f" ({len(problems) - 1} more problem{'s' if len(problems) > 2 else ''} after it)" if len(problems) > 1 else ""
    return f"Invalid value for '{field}'{given}: {message}{more}; change that setting and run again."


def one_line(text: str) -> str:
    """Collapse a message to one line (the CLI prints every error as one sentence)."""
    return " ".join(str(text).split())
