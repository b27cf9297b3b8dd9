"""YAML loading with includes, ${ENV} substitution and a line for every path.

``load_document`` turns a YAML file into plain Python data plus a ``SourceMap`` from
document path (``("enterprises", 0, "tags", 3)``) to ``file:line``, so every later error
can say where it is. ``!include other.yaml`` (relative to the including file) splices a
document in place; ``${NAME}`` and ``${NAME:-default}`` are replaced from the environment.
Problems are collected, never raised one at a time; ``load_plant`` raises one ConfigError
with all of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError, ConfigIssue

__all__ = ["Loaded", "SourceMap", "format_path", "load_document", "load_plant", "load_plant_located"]

PathKey = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_INCLUDE_DEPTH = 16
_SCALARS = yaml.constructor.SafeConstructor()


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class SourceMap:
    """Document path -> (file, line). Lookups fall back to the nearest ancestor."""

    root_file: str
    lines: dict[PathKey, tuple[str, int]] = field(default_factory=dict)

    def where(self, path: PathKey) -> tuple[str, int]:
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), (self.root_file, 0))

    def issue(self, path: PathKey, message: str) -> ConfigIssue:
        file, line = self.where(path)
        return ConfigIssue(file, line, format_path(path), message)


@dataclass
class Loaded:
    data: Any
    source: SourceMap
    issues: list[ConfigIssue]
    failed_includes: set[PathKey] = field(default_factory=set)


class _Builder:
    def __init__(self, root: Path, env: Mapping[str, str], display_base: Path) -> None:
        self.env = env
        self.display_base = display_base
        self.source = SourceMap(self._display(root))
        self.issues: list[ConfigIssue] = []
        self.failed_includes: set[PathKey] = set()

    def _display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.display_base))
        except ValueError:
            return str(path)

    def load_file(self, path: Path, at: PathKey, stack: tuple[Path, ...]) -> Any:
        shown = self._display(path)
        if len(stack) > _MAX_INCLUDE_DEPTH or path.resolve() in stack:
            return self._failed(ConfigIssue(shown, 0, format_path(at), "include cycle"), at)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return self._failed(ConfigIssue(shown, 0, format_path(at), f"cannot read: {exc}"), at)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line, column = _line_column(raw, exc.start)
            message = (
                f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {column} (save the file as UTF-8)"
            )
            return self._failed(ConfigIssue(shown, line, format_path(at), message), at)
        try:
            node = _compose(text)
        except yaml.YAMLError as exc:
            line, message = _yaml_problem(exc, text)
            return self._failed(ConfigIssue(shown, line, format_path(at), f"YAML syntax: {message}"), at)
        if node is None:
            return {}
        return self._node(node, path, shown, at, (*stack, path.resolve()))

    def _failed(self, issue: ConfigIssue, at: PathKey) -> None:
        """A file that cannot be loaded: one issue, and its place is left out of later checks
        (it holds None, which would otherwise read as a second, misleading type error)."""
        self.issues.append(issue)
        self.failed_includes.add(at)

    def _node(self, node: yaml.Node, path: Path, shown: str, at: PathKey, stack: tuple[Path, ...]) -> Any:
        self.source.lines.setdefault(at, (shown, node.start_mark.line + 1))
        if node.tag == "!include":
            if not isinstance(node, yaml.ScalarNode):
                self.issues.append(self.source.issue(at, "!include takes a file name"))
                return None
            target = (path.parent / str(node.value)).resolve()
            line = node.start_mark.line + 1
            self.source.lines[at] = (shown, line)
            problem = None
            if target in stack:
                chain = [self._display(p) for p in stack[stack.index(target) :]]
                problem = f"include cycle: {' -> '.join([*chain, self._display(target)])}"
            elif len(stack) > _MAX_INCLUDE_DEPTH:
                problem = f"includes nested deeper than {_MAX_INCLUDE_DEPTH}"
            elif not target.is_file():
                problem = f"cannot include {node.value!r}: no such file"
            if problem is not None:
                self.issues.append(ConfigIssue(shown, line, format_path(at), problem))
                self.failed_includes.add(at)
                return None
            return self.load_file(target, at, stack)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self.issues.append(
                        ConfigIssue(
                            shown,
                            key_node.start_mark.line + 1,
                            format_path(at),
                            "mapping keys must be plain strings",
                        )
                    )
                    continue
                child = (*at, key)
                if key in out:
                    self.issues.append(
                        ConfigIssue(shown, key_node.start_mark.line + 1, format_path(child), "duplicate key")
                    )
                self.source.lines[child] = (shown, key_node.start_mark.line + 1)
                out[key] = self._node(value_node, path, shown, child, stack)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._node(v, path, shown, (*at, i), stack) for i, v in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        value = _SCALARS.construct_object(node)
        if isinstance(value, str):
            value = self._substitute(value, at)
        return value

    def _substitute(self, text: str, at: PathKey) -> str:
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.issues.append(self.source.issue(at, f"environment variable {name} is not set"))
            return ""

        return _ENV.sub(repl, text) if "${" in text else text


def _compose(text: str) -> yaml.Node | None:
    """libyaml when present (ten times faster on a large plant); a file it refuses is parsed
    again by PyYAML, whose messages and marks are the ones the errors below are built from."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            node: yaml.Node | None = yaml.compose(text, Loader=fast)
        except yaml.YAMLError:
            pass
        else:
            return node
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _line_column(raw: bytes, offset: int) -> tuple[int, int]:
    """1-based line and character column of a byte offset into (mostly) UTF-8 text."""
    start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, len(raw[start:offset].decode("utf-8", "replace")) + 1


# Constructs that open with one character and must be closed by another: when the parser
# gives up on a later line, the useful place is where the construct began.
_OPENERS = ("while parsing a flow mapping", "while parsing a flow sequence", "while scanning a quoted scalar")


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int, str]:
    """(line, message) for a YAML error: one message, at the line that needs the fix."""
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position)
        return line, f"unacceptable character #x{exc.character:04x} at column {column}: {exc.reason}"
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return 0, str(exc)
    mark, problem = exc.problem_mark, exc.problem or str(exc)
    opened = exc.context_mark
    if exc.context in _OPENERS and opened is not None and opened.line != mark.line:
        char = text[opened.index] if opened.index < len(text) else "?"
        return opened.line + 1, (
            f"{char!r} opened here (column {opened.column + 1}) is not closed: "
            f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
        )
    return mark.line + 1, problem


def load_document(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Loaded:
    """Load a YAML file (following !include) into data, its source map and its issues."""
    p = Path(path)
    base = Path.cwd().resolve()
    builder = _Builder(p, os.environ if env is None else env, base)
    data = builder.load_file(p, (), ())
    return Loaded(data, builder.source, builder.issues, builder.failed_includes)


def load_plant(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Any:
    """Load and validate a plant config (a file, or a folder holding ``plant.yaml``).

    Returns a ``core.plant.Plant``; raises ConfigError listing every problem found.
    """
    return load_plant_located(path, env)[0]


def load_plant_located(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> tuple[Any, SourceMap]:
    """``load_plant``, plus the SourceMap of the plant's document, so that a problem found
    later (compiling rules or sources) can still be reported at its ``file:line``."""
    from core.plant_check import build_plant  # plant_check imports this module

    p = Path(path)
    if p.is_dir():
        p = p / "plant.yaml"
    if not p.exists():
        raise ConfigError(
            [
                ConfigIssue(
                    str(path), 0, "", "no such file (expected a plant YAML or a folder with plant.yaml)"
                )
            ]
        )
    loaded = load_document(p, env)
    return build_plant(loaded, p), loaded.source
