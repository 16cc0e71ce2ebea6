"""Configuration files (YAML or JSON) whose every error names its line.

`read_config_file` parses a file into plain data and keeps, for every key and
list item, the line it is written on. When a pydantic model then refuses the
data, `ConfigFile.error` turns the first problem into one sentence such as

    experiment.yaml line 12: runs[1].prune.sparsity: Sparsity 1.5 is outside [0, 1); ...

Errors raised as `BabelpruneError` inside a validator carry no location; the
field is then found by the value the sentence quotes (see `_field_quoted`).
JSON is read by the YAML parser (JSON is YAML), so one reader serves both.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from babelprune.errors import BabelpruneError

Path_ = tuple[str | int, ...]  # keys and list indices from the top of the file


@dataclass
class ConfigFile:
    """The data of a configuration file, and the line of every key and list item in it."""

    path: Path
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def locate(self, where: Path_, value: Any = None) -> tuple[Path_, int]:
        """(path, line) of `where`, or of its nearest written ancestor; in a list of alternatives, of the item equal to `value`."""
        where = tuple(where)
        while where and where not in self.lines:
            where = where[:-1]
        node = self.value_at(where)
        if isinstance(node, list) and value is not None and not isinstance(value, (list, dict)):
            for index, item in enumerate(node):
                if item == value and where + (index,) in self.lines:
                    return where + (index,), self.lines[where + (index,)]
        return where, self.lines.get(where, 1)

    def value_at(self, where: Path_) -> Any:
        node = self.data
        for part in where:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def error(self, where: Path_, message: str, value: Any = None) -> BabelpruneError:
        """One sentence naming the file, the line and the key path of a problem."""
        found, line = self.locate(where, value)
        if len(found) < len(where):  # the path goes deeper than the file (a missing key): name it all
            found = tuple(where)
        message = _sentence(message).rstrip(". ")
        return BabelpruneError(f"{self.name} line {line}: {dotted(found)}: {message}.")

    def validation_error(self, exc: ValidationError | BabelpruneError, model: type[BaseModel], prefix: Path_ = ()) -> BabelpruneError:
        """The first problem of validating the data at `prefix` as `model`, as one sentence with its line."""
        if isinstance(exc, BabelpruneError):
            where, value = _field_quoted(str(exc), self.value_at(prefix), prefix)
            return self.error(where, _sentence(str(exc)), value)
        problems = exc.errors(include_url=False)
        first = problems[0]
        loc = tuple(first.get("loc", ()))
        where = prefix + loc
        more = f" ({len(problems) - 1} more problem{'s' if len(problems) > 2 else ''} after it)" if len(problems) > 1 else ""
        if first.get("type") == "extra_forbidden":
            known = sorted(_fields_at(model, loc[:-1]))
            message = f"unknown key '{loc[-1]}'; the keys here are: {', '.join(known)}"
        else:
            message = first.get("msg", "is invalid").removeprefix("Value error, ")
            given = first.get("input")
            if "input" in first and not isinstance(given, (dict, list)) and first.get("type") != "missing":
                message = f"{message} (given {given!r})"
        return self.error(where, f"{_sentence(message)}{more}; fix it and run again", first.get("input"))

    def validate(self, model: type[BaseModel], prefix: Path_ = (), data: Any = None) -> BaseModel:
        """`model` validated from the data at `prefix` (or from `data`), errors naming their line."""
        try:
            return model.model_validate(self.value_at(prefix) if data is None else data)
        except (ValidationError, BabelpruneError) as exc:
            raise self.validation_error(exc, model, prefix) from None


def read_config_file(path: Path | str) -> ConfigFile:
    """Parse a YAML or JSON file; a missing file, a syntax error or a repeated key is one sentence with its line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BabelpruneError(f"No configuration file at {path}; give the path of a .yaml or .json file.")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None and mark.line >= len(text.splitlines()) and getattr(exc, "context_mark", None) is not None:
            mark = exc.context_mark  # the file ended inside an open bracket or quote: name where it opened
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BabelpruneError(f"{path.name}{line}: not valid YAML ({problem}); fix the syntax there and run again.") from None
    lines: dict[Path_, int] = {}
    if root is not None:
        _walk(root, (), lines, path.name)
    return ConfigFile(path, {} if data is None else data, lines)


def _walk(node, where: Path_, lines: dict[Path_, int], name: str) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:  # PyYAML keeps the last value silently; a repeated key is a mistake
                raise BabelpruneError(
                    f"{name} line {key_node.start_mark.line + 1}: {dotted(where + (key,))}: the key '{key}' is given twice "
                    "in the same mapping; keep one."
                )
            seen.add(key)
            lines[where + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, where + (key,), lines, name)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[where + (index,)] = item.start_mark.line + 1
            _walk(item, where + (index,), lines, name)


def dotted(where: Path_) -> str:
    """('runs', 1, 'prune', 'sparsity') -> 'runs[1].prune.sparsity'."""
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def _sentence(message: str) -> str:
    message = " ".join(message.split()).rstrip(".")
    return message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message


def _leaves(data: Any, where: Path_) -> list[tuple[Path_, Any]]:
    if isinstance(data, dict):
        return [leaf for key, value in data.items() for leaf in _leaves(value, where + (key,))]
    if isinstance(data, list):
        return [leaf for index, value in enumerate(data) for leaf in _leaves(value, where + (index,))]
    return [(where, data)]


def _field_quoted(message: str, data: Any, prefix: Path_) -> tuple[Path_, Any]:
    """The written field whose value the sentence quotes ('foo', 1.5...), else `prefix` itself."""
    for where, value in _leaves(data, prefix):
        if value is None or isinstance(value, bool):
            continue
        spaced = f" {message.replace(';', ' ').replace(',', ' ')} "
        texts = {str(value)} | ({str(float(value))} if isinstance(value, (int, float)) else set())  # 2 is quoted as 2.0
        if any(f"'{text}'" in message or f" {text} " in spaced for text in texts):
            return where, value
    return prefix, None


def _fields_at(model: type[BaseModel], loc: Path_) -> set[str]:
    """The field names of the model found at `loc` inside `model` (through lists, unions and optionals)."""
    current: list[Any] = [model]
    for part in loc:
        following = []
        for candidate in current:
            if isinstance(part, int):
                following.extend(_inner_types(candidate, lists=True))
            elif _is_model(candidate) and part in candidate.model_fields:
                following.extend(_inner_types(candidate.model_fields[part].annotation))
        current = following
    return {name for candidate in current if _is_model(candidate) for name in candidate.model_fields}


def _inner_types(annotation: Any, lists: bool = False) -> list[Any]:
    """The model types an annotation may hold: through Optional/Union and, when `lists`, list items."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [inner for arg in typing.get_args(annotation) for inner in _inner_types(arg, lists)]
    if lists and origin in (list, tuple):
        return [inner for arg in typing.get_args(annotation) for inner in _inner_types(arg)]
    return [annotation]


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)
