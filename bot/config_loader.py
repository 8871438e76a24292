"""Read the YAML config file into a `Config`, or say exactly what is wrong with it and where.

The schema lives in `rollout/config.py`; this module adds what a person editing the file needs:
every problem at once, each named by the key path they wrote (`services.checkout.steps`, not
pydantic's internal `services.checkout.policy.steps`) with the line of that key. The YAML is
composed into nodes first so that every key keeps its line, then built into plain data for
pydantic. A few checks that need the whole file (strategy-specific keys, duplicate keys, a
`policy:` key that the merge of `defaults` would silently drop) are made here too.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from rollout.config import POLICY_KEYS, Config, ServiceConfig
from rollout.traffic import registry

Segment = str | int

_POLICY_KEY_MESSAGE = (
    "unknown key 'policy': write policy keys (steps, rules, ...) directly under the service"
)
_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
    "tuple_type": "a list, like [a, b]",
    "list_type": "a list, like [a, b]",
    "time_delta_type": "a duration like 30s, 10m, 1h or 1h30m",
    "time_delta_parsing": "a duration like 30s, 10m, 1h or 1h30m",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the file: the key path as the user wrote it, its line, and why."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """A config file that cannot be used; `problems` lists everything found, in file order."""

    def __init__(self, problems: Iterable[ConfigProblem], *, source: str = "<config>") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__("\n".join(str(problem) for problem in self.problems))


def load_config(path: Path | str) -> Config:
    """Read and validate the file at `path`; raises `ConfigError` for any problem at all."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem("", None, f"cannot read {path}: {exc.strerror or exc}")
        raise ConfigError([problem], source=str(path)) from exc
    except UnicodeDecodeError as exc:
        problem = ConfigProblem("", None, f"cannot read {path}: it is not UTF-8 text")
        raise ConfigError([problem], source=str(path)) from exc
    return load_config_text(text, source=str(path))


def load_config_text(text: str, *, source: str = "<config>") -> Config:
    """Validate YAML text; `source` names the text in the raised `ConfigError`."""
    root, data, problems = _parse_yaml(text, source=source)
    if not isinstance(data, dict):
        kind = _shown(data)
        message = (
            f"the top level must be a mapping of sections (slack:, services:, ...), not {kind}"
        )
        raise ConfigError([*problems, ConfigProblem("", _line(root), message)], source=source)
    problems += _service_problems(root, data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += _translate(exc.errors(), root=root, data=data)
    if problems:
        raise ConfigError(_in_file_order(problems), source=source)
    return config


def describe_config(config: Config) -> str:
    """One line for a valid file: what `check-config` prints and start-up logs."""
    services = _count(len(config.services), "service")
    if config.services:
        strategies = ", ".join(f"{name}: {svc.strategy}" for name, svc in config.services.items())
        services += f" ({strategies})"
    channels = config.slack.release_channels
    where = _count(len(channels), "release channel") if channels else "any channel"
    return f"valid: {services}, {where}, cluster {config.cluster_name}"


def _parse_yaml(text: str, *, source: str) -> tuple[yaml.Node, Any, list[ConfigProblem]]:
    """Compose the text into nodes (each key keeps its line), then build plain data from them."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            # Before construction: building the data expands `<<` merge keys in place, after
            # which a key that overrides a merged one would look like a duplicate.
            duplicates = _duplicate_keys(root, ()) if root is not None else []
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text)], source=source) from None
    if root is None:
        message = "the file is empty: it needs at least a services: section"
        raise ConfigError([ConfigProblem("", None, message)], source=source)
    return root, data, duplicates


def _yaml_problem(exc: yaml.YAMLError, text: str) -> ConfigProblem:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML refuses, by text position
        line = text.count("\n", 0, exc.position) + 1
        character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "character"
        return ConfigProblem("", line, f"not valid YAML: {character}: {exc.reason}")
    if not isinstance(exc, yaml.MarkedYAMLError):
        return ConfigProblem("", None, "not valid YAML: " + " ".join(str(exc).split()))
    mark = exc.problem_mark or exc.context_mark
    reason = exc.problem or "unreadable"
    if exc.context:
        reason += f" ({exc.context})"
    return ConfigProblem("", mark.line + 1 if mark else None, f"not valid YAML: {reason}")


def _duplicate_keys(node: yaml.Node, path: tuple[Segment, ...]) -> list[ConfigProblem]:
    """YAML keeps the last of two equal keys without a word; a config edit deserves one."""
    problems: list[ConfigProblem] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in first_line:
                first = first_line[key.value]
                message = f"duplicate key (first at line {first}); YAML would keep only the last"
                problems.append(ConfigProblem(_render((*path, key.value)), line, message))
            first_line.setdefault(key.value, line)
            problems += _duplicate_keys(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*path, index))
    return problems


def _service_problems(root: yaml.Node, data: dict[Any, Any]) -> list[ConfigProblem]:
    """What the schema cannot see, checked on the raw data so it is reported with the rest:
    a `policy:` key (the merge of `defaults` would replace it without a word), and the objects
    each strategy's router needs to be named."""
    services = data.get("services")
    problems: list[ConfigProblem] = []
    for name, raw in services.items() if isinstance(services, dict) else ():
        if not isinstance(raw, dict):
            continue
        found: list[tuple[str, str]] = []
        if "policy" in raw:
            found.append(("policy", _POLICY_KEY_MESSAGE))
        strategy = raw.get("strategy")
        known = registry.STRATEGIES.get(strategy) if isinstance(strategy, str) else None
        for key, what in known.needs if known is not None else ():
            if raw.get(key) is None:
                found.append((key, f"strategy {strategy} needs {key}: {what}"))
        for key, message in found:
            where = ("services", str(name), key)
            problems.append(ConfigProblem(_render(where), _line_of(root, where), message))
    return problems


def _translate(
    errors: Sequence[ErrorDetails], *, root: yaml.Node, data: dict[Any, Any]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in errors:
        where = _user_path(error["loc"], data)
        problem = ConfigProblem(_render(where), _line_of(root, where), _message(error))
        if problem not in problems:  # a `defaults` error comes back once per service
            problems.append(problem)
    return problems


def _user_path(loc: tuple[Segment, ...], data: dict[Any, Any]) -> tuple[Segment, ...]:
    """Where the user wrote the value: `services.<name>.policy.<key>` is the service's own key
    when the service sets it, else the `defaults` key it was merged from."""
    if len(loc) >= 4 and loc[0] == "services" and loc[2] == "policy":
        name, key, rest = loc[1], loc[3], loc[4:]
        services = data.get("services")
        raw = services.get(name) if isinstance(services, dict) else None
        if isinstance(raw, dict) and key in POLICY_KEYS and key in raw:
            return ("services", str(name), key, *rest)
        return ("defaults", key, *rest)
    # A number that keys a mapping (a service named 5) is a name, not a list index.
    return tuple(
        str(segment) if isinstance(segment, int) and _is_mapping_at(loc[:index]) else segment
        for index, segment in enumerate(loc)
        if segment != "[key]"
    )


def _is_mapping_at(loc: Sequence[Segment]) -> bool:
    return get_origin(_annotation_at(loc)) is dict


def _message(error: ErrorDetails) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    got = _shown(error["input"])
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        close = difflib.get_close_matches(key, sorted(_allowed_keys(loc[:-1])), n=1)
        return f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind == "literal_error":
        annotation = _annotation_at(loc)
        if get_origin(annotation) is Literal:
            allowed = ", ".join(str(value) for value in get_args(annotation))
        else:
            allowed = str(ctx.get("expected", "?")).replace("'", "")
        return f"must be one of {allowed} (got {got})"
    if loc and loc[-1] == "[key]":
        return f"this key must be text (got {got})"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]} (got {got})"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(name)} (got {got})"
    return error["msg"][:1].lower() + error["msg"][1:]


def _line_of(root: yaml.Node, path: Sequence[Segment]) -> int | None:
    """The line of the key at `path`, or of the nearest parent key that exists."""
    node, line = root, None
    for segment in path:
        if isinstance(node, yaml.MappingNode):
            entry = next((kv for kv in node.value if kv[0].value == str(segment)), None)
            if entry is None:
                break
            line, node = _line(entry[0]), entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(segment, int):
            if not 0 <= segment < len(node.value):
                break
            node = node.value[segment]
            line = _line(node)
        else:
            break
    return line


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _render(path: Iterable[Segment]) -> str:
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += ("." if text else "") + ("for" if segment == "for_" else segment)
    return text


def _annotation_at(loc: Sequence[Segment]) -> Any:
    """The type that pydantic validated at `loc`, found by walking the schema's fields."""
    current: Any = Config
    for segment in loc:
        current = _without_none(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next(
                (f for n, f in current.model_fields.items() if segment in (n, f.alias)), None
            )
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (tuple, list):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    return _without_none(current)


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(kept) == 1:
            return kept[0]
    return annotation


def _allowed_keys(loc: Sequence[Segment]) -> set[str]:
    model = _annotation_at(loc)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return set()
    keys = {field.alias or name for name, field in model.model_fields.items()}
    if model is ServiceConfig:  # a service sets policy keys beside its own, never `policy:`
        keys = (keys - {"policy"}) | POLICY_KEYS
    return keys


def _in_file_order(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
