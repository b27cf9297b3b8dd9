"""YAML loading with includes, ${ENV} substitution and a line for every path.

``load_document`` turns a YAML file into plain Python data plus a ``SourceMap`` from
document path (``("enterprises", 0, "tags", 3)``) to ``file:line``, so every later error
can say where it is. ``!include other.yaml`` (relative to the including file) splices a
document in place; ``${NAME}`` and ``${NAME:-default}`` are replaced from the environment.
Problems are collected, never raised one at a time (``core.config.load_plant`` raises one
ConfigError with all of them). Nothing here knows the plant model.

A province is hundreds of included files and millions of paths, and a valid config never asks
where one of them is. So files are read without recording lines: the SourceMap keeps each
file's text and walks it for its lines the first time a path in it is looked up (the same
walk, so the same lines). The files the top-level file includes are read in parallel by
worker processes when there is enough of them to pay for it (``_PARALLEL_MIN_BYTES``).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigIssue

__all__ = ["Loaded", "PartHook", "PathKey", "SourceMap", "format_path", "load_document"]

PathKey = tuple[str | int, ...]
PartHook = Callable[[PathKey, Any, Any], None]  # (place, part's data, the top-level document)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_INCLUDE_DEPTH = 16
# Included files are read by worker processes when the top-level file includes at least two
# and they hold this much YAML together: reading costs about 0.25 s of CPU per MiB, and a
# fork and the data's way back about 50 ms.
_PARALLEL_MIN_BYTES = 1 << 20
_MAX_WORKERS = 8


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class _Unlocated:
    """A file read without its lines: enough to walk it again for them."""

    text: str
    path: Path
    shown: str
    fast: bool  # libyaml read it (else PyYAML's own parser had to)


class SourceMap:
    """Document path -> (file, line). Lookups fall back to the nearest ancestor.

    Lines of a file read without them are found on the first lookup that needs them.
    """

    def __init__(self, root_file: str, lines: dict[PathKey, tuple[str, int]] | None = None) -> None:
        self.root_file = root_file
        self._lines: dict[PathKey, tuple[str, int]] = {} if lines is None else lines
        self._unlocated: dict[PathKey, _Unlocated] = {}  # by the path the file is read at

    @property
    def lines(self) -> dict[PathKey, tuple[str, int]]:
        """Every path's line (walks every file not yet walked for its lines)."""
        for at in sorted(self._unlocated, key=len):  # an includer's lines before its includes'
            self._locate_file(at)
        return self._lines

    def where(self, path: PathKey) -> tuple[str, int]:
        p = tuple(path)
        if self._unlocated:
            for k in range(len(p) + 1):  # an includer first: its include line is the file's path's
                if p[:k] in self._unlocated:
                    self._locate_file(p[:k])
        while p:
            if p in self._lines:
                return self._lines[p]
            p = p[:-1]
        return self._lines.get((), (self.root_file, 0))

    def has_line(self, path: PathKey) -> bool:
        """Whether ``path`` itself (not an ancestor) was written in a file."""
        self.where(path)
        return tuple(path) in self._lines

    def issue(self, path: PathKey, message: str) -> ConfigIssue:
        file, line = self.where(path)
        return ConfigIssue(file, line, format_path(path), message)

    def _locate_file(self, at: PathKey) -> None:
        file = self._unlocated.pop(at, None)
        if file is None:
            return
        builder = _Builder(file.path, {}, Path.cwd(), source=self)
        try:
            events = _events(file.text, _FAST if file.fast else yaml.SafeLoader)
            builder.walk(events, file.path, file.shown, at, (), locate=True)
        except (yaml.YAMLError, _NotComposable):
            pass  # it was read: its lines are what the walk got to


@dataclass
class Loaded:
    data: Any
    source: SourceMap
    issues: list[ConfigIssue]
    failed_includes: set[PathKey] = field(default_factory=set)


@dataclass
class _Part:
    """What reading one included file gave (sent back by a worker process)."""

    data: Any
    issues: list[ConfigIssue]
    failed_includes: set[PathKey]
    unlocated: dict[PathKey, _Unlocated]


@dataclass
class _Pending:
    """An include of the top-level file, read once the top-level file has been walked."""

    at: PathKey
    target: Path
    stack: tuple[Path, ...]
    issues_at: int  # where its issues go in the issue list (document order)


class _Builder:
    def __init__(
        self,
        root: Path,
        env: Mapping[str, str],
        display_base: Path,
        source: SourceMap | None = None,
        gather_includes: bool = False,
    ) -> None:
        self.env = env
        self.display_base = display_base
        self.source = SourceMap(self._display(root)) if source is None else source
        self.issues: list[ConfigIssue] = []
        self.failed_includes: set[PathKey] = set()
        # the top-level file's includes, read after it (in parallel when worth it)
        self.pending: list[_Pending] | None = [] if gather_includes else None

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
        raw_suspect = _RAW_SUSPECT.search(text)  # characters libyaml passes through unquoted
        if raw_suspect is not None:
            line = text.count("\n", 0, raw_suspect.start()) + 1
            message = (
                f"character U+{ord(raw_suspect.group()):04X} (a line separator or bidirectional "
                "override: the text would read differently from what it is): remove it"
            )
            return self._failed(ConfigIssue(shown, line, format_path(at), message), at)
        stack = (*stack, path.resolve())
        issues, failed = len(self.issues), set(self.failed_includes)
        pending = len(self.pending) if self.pending is not None else 0
        fast = True
        try:
            data = self.walk(_events(text, _FAST), path, shown, at, stack)
        except (yaml.YAMLError, _NotComposable):
            # What the walk recorded of a file it then gave up on is not the file's to report.
            del self.issues[issues:]
            self.failed_includes.intersection_update(failed)
            if self.pending is not None:
                del self.pending[pending:]
            fast = False  # PyYAML reads it again, for its exact error
            try:
                yaml.compose(text, Loader=yaml.SafeLoader)  # the composer's own error, if any
                data = self.walk(_events(text, yaml.SafeLoader), path, shown, at, stack)
            except yaml.YAMLError as exc:
                line, message = _yaml_problem(exc, text)
                return self._failed(ConfigIssue(shown, line, format_path(at), f"YAML syntax: {message}"), at)
        self.source._unlocated[at] = _Unlocated(text, path, shown, fast)
        return data

    def _failed(self, issue: ConfigIssue, at: PathKey) -> None:
        """A file that cannot be loaded: one issue, and its place is left out of later checks
        (it holds None, which would otherwise read as a second, misleading type error)."""
        self.issues.append(issue)
        self.failed_includes.add(at)

    def walk(
        self,
        events: list[Any],
        path: Path,
        shown: str,
        at: PathKey,
        stack: tuple[Path, ...],
        locate: bool = False,
    ) -> Any:
        """The one document of a file's events (a file without one reads as ``{}``); ``locate``:
        record every path's line instead of reading the files it includes."""
        if isinstance(events[1], yaml.StreamEndEvent):
            return {}
        walk = _Walk(self, events, path, shown, stack, locate)
        walk.pos = 2  # past StreamStart and DocumentStart
        data = walk.node(at)
        if not isinstance(events[walk.pos + 1], yaml.StreamEndEvent):
            raise _NotComposable("a second document")
        return data

    def read_pending(self, data: Any, on_part: PartHook | None = None) -> Any:
        """``data`` with the top-level file's includes read and put in their places; ``on_part``
        sees each part that loaded without an issue, as soon as it is read (in no set order)."""
        pending, self.pending = self.pending or [], None
        if not pending:
            return data
        jobs = [(p.target, p.at, p.stack, dict(self.env), self.display_base) for p in pending]
        done: dict[int, _Part] = {}
        for i, part in _read_parts(jobs):
            done[i] = part
            if on_part is not None and not part.issues and not part.failed_includes:
                on_part(pending[i].at, part.data, data)  # while the workers read the others
        parts = [done[i] for i in range(len(jobs))]
        for p, part in reversed(list(zip(pending, parts, strict=True))):  # later places first
            self.issues[p.issues_at : p.issues_at] = part.issues
        for p, part in zip(pending, parts, strict=True):
            self.failed_includes |= part.failed_includes
            self.source._unlocated.update(part.unlocated)
            if not p.at:
                data = part.data
                continue
            _place(data, p.at, part.data)
        return data

    def substitute(self, text: str, at: PathKey, shown: str, line: int) -> str:
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.issues.append(
                ConfigIssue(shown, line, format_path(at), f"environment variable {name} is not set")
            )
            return ""

        if "${" not in text:
            return text
        out = _ENV.sub(repl, text)
        self.check_text(out, at, shown, line, "after substituting environment variables")
        return out

    def check_text(self, text: str, at: PathKey, shown: str, line: int, how: str = "") -> None:
        """A control character in a string (a double-quoted escape such as "\\0", or an
        environment variable's value) is refused: PostgreSQL cannot store NUL, and the others
        garble alarm messages, SMS and CSV. Tab, line feed and carriage return are text."""
        m = _CONTROL.search(text)
        if m is not None:
            where = f" {how}" if how else ""
            self.issues.append(
                ConfigIssue(
                    shown,
                    line,
                    format_path(at),
                    f"control character U+{ord(m.group()):04X} in the text{where}: remove it "
                    "(names and messages are stored in PostgreSQL and sent by SMS)",
                )
            )


def _place(data: Any, at: PathKey, value: Any) -> None:
    """``value`` at ``at`` in ``data``, where the walk left None for it; nowhere when that place
    is gone (a duplicate key replaced what held it: that is reported, the include is not)."""
    container = data
    for key in at[:-1]:
        try:
            container = container[key]
        except (KeyError, IndexError, TypeError):
            return
    last = at[-1]
    if isinstance(container, dict) and last in container and container[last] is None:
        container[last] = value
    elif (
        isinstance(container, list)
        and isinstance(last, int)
        and last < len(container)
        and container[last] is None
    ):
        container[last] = value


def _read_part(target: Path, at: PathKey, stack: tuple[Path, ...], env: dict[str, str], base: Path) -> _Part:
    """One included file (and what it includes), read as ``load_document`` reads files."""
    builder = _Builder(target, env, base)
    data = builder.load_file(target, at, stack)
    return _Part(data, builder.issues, builder.failed_includes, builder.source._unlocated)


def _read_parts(
    jobs: list[tuple[Path, PathKey, tuple[Path, ...], dict[str, str], Path]],
) -> Iterator[tuple[int, _Part]]:
    """Each job's part with its index, as soon as it is read: by worker processes (largest
    first, handed on in the order they finish) when there is enough YAML to pay for them."""
    sizes = [_size(job[0]) for job in jobs]
    size = sum(sizes)
    workers = min(len(jobs), len(os.sched_getaffinity(0)), _MAX_WORKERS)
    if workers < 2 or size < _PARALLEL_MIN_BYTES or "fork" not in multiprocessing.get_all_start_methods():
        yield from ((i, _read_part(*job)) for i, job in enumerate(jobs))
        return
    # fork: the workers start at once with this process's modules (spawn would import them again)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        order = sorted(range(len(jobs)), key=lambda i: -sizes[i])  # largest first
        futures = {pool.submit(_read_part, *jobs[i]): i for i in order}
        yield from ((futures[f], f.result()) for f in as_completed(futures))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_FAST: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NotComposable(Exception):
    """What ``yaml.compose`` refuses after parsing: a second document, an alias before its
    anchor, an anchor given twice. The file is read again by PyYAML for the exact error."""


def _events(text: str, loader: Any) -> list[Any]:
    """Every parse event of ``text``: by libyaml (``_FAST``, ten times faster), or by PyYAML,
    whose messages and marks the errors are built from when libyaml refuses a file."""
    parser = loader(text)
    try:
        get, end, events = parser.get_event, yaml.StreamEndEvent, []
        while True:
            e = get()
            events.append(e)
            if type(e) is end:
                return events
    finally:
        parser.dispose()


class _Walk:
    """One file's events turned into data (or, with ``locate``, into every path's line).

    Exactly what composing the file into nodes and walking them did, without the nodes:
    scalars are resolved and constructed by PyYAML's own resolver and constructors (cached
    per tag and text: scalars are immutable), an alias is its anchored node walked again.
    A path is a mapping key's line when it is a key, else its node's.
    """

    def __init__(
        self,
        builder: _Builder,
        events: list[Any],
        path: Path,
        shown: str,
        stack: tuple[Path, ...],
        locate: bool = False,
    ) -> None:
        self.builder, self.events, self.path, self.shown, self.stack = builder, events, path, shown, stack
        self.locate = locate
        # one (file, line) per line, shared by every path on it: a province has millions of paths
        self.wheres: list[tuple[str, int] | None] = [None] * (events[-1].end_mark.line + 2) if locate else []
        self.lines = builder.source._lines
        self.pos = 0
        self.anchors: dict[str, int] = {}

    def node(self, at: PathKey, key_line: int | None = None) -> Any:
        """The node at ``pos``; a problem in it is reported at ``key_line``, its mapping key's
        line, when it has one (else at the node's own line)."""
        e: Any = self.events[self.pos]  # a NodeEvent (typed loosely: PyYAML's stubs make marks optional)
        kind = type(e)
        if kind is yaml.AliasEvent:
            resume, self.pos = self.pos + 1, self._anchored(e)
            value = self.node(at, key_line)
            self.pos = resume
            return value
        if e.anchor is not None:
            self._anchor(e.anchor)
        line = e.start_mark.line + 1
        if self.locate:
            self.lines.setdefault(at, self._where(line))
        if e.tag == "!include":
            return self._include(e, at, line, line if key_line is None else key_line)
        self.pos += 1
        if kind is yaml.ScalarEvent:
            try:
                value = _scalar_value(e.tag, e.value, e.implicit)
            except (yaml.constructor.ConstructorError, ValueError) as exc:  # an explicit tag it cannot take
                problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
                self.builder.issues.append(ConfigIssue(self.shown, line, format_path(at), f"YAML: {problem}"))
                self.builder.failed_includes.add(at)  # holds None: no second, misleading type error
                return None
            if type(value) is str:
                if e.style == '"':  # only escapes make control characters: libyaml refuses raw ones
                    self.builder.check_text(value, at, self.shown, line if key_line is None else key_line)
                if "${" in value:
                    return self.builder.substitute(
                        value, at, self.shown, line if key_line is None else key_line
                    )
            return value
        if kind is yaml.SequenceStartEvent:
            out: list[Any] = []
            while type(self.events[self.pos]) is not yaml.SequenceEndEvent:
                out.append(self.node((*at, len(out))))
            self.pos += 1
            return out
        return self._mapping(at)

    def _mapping(self, at: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        events, shown, lines, wheres, locate = self.events, self.shown, self.lines, self.wheres, self.locate
        while type(events[self.pos]) is not yaml.MappingEndEvent:
            here: Any = events[self.pos]  # the key, or an alias of it
            key_event = events[self._anchored(here)] if type(here) is yaml.AliasEvent else here
            key_line = here.start_mark.line + 1
            if type(key_event) is not yaml.ScalarEvent:
                self.builder.issues.append(
                    ConfigIssue(shown, key_line, format_path(at), "mapping keys must be plain strings")
                )
                self._skip()
                self._skip()
                continue
            if key_event is here and here.anchor is not None:
                self._anchor(here.anchor)
            self.pos += 1
            key = key_event.value
            if key in out:
                self.builder.issues.append(
                    ConfigIssue(shown, key_line, format_path((*at, key)), "duplicate key")
                )
            if locate:
                where = wheres[key_line]
                lines[(*at, key)] = where if where is not None else self._where(key_line)
            value: Any = events[self.pos]
            if type(value) is yaml.ScalarEvent and value.tag is None and value.anchor is None:
                # most values: a plain or quoted scalar, whose line is its key's (node() inlined)
                self.pos += 1
                text, implicit = value.value, value.implicit
                try:
                    if not implicit[0] or (text and _PATTERN_FIRST and text[0] not in _PATTERN_FIRST):
                        out[key] = v = text  # _scalar_value's string case, inlined
                    else:
                        out[key] = v = _constructed(None, text, implicit)
                except ValueError:
                    self.pos -= 1  # node() reports it
                else:
                    if type(v) is str:
                        if value.style == '"':  # only escapes make control characters
                            self.builder.check_text(v, (*at, key), shown, key_line)
                        if "${" in v:
                            out[key] = self.builder.substitute(v, (*at, key), shown, key_line)
                    continue
            out[key] = self.node((*at, key), key_line)
        self.pos += 1
        return out

    def _where(self, line: int) -> tuple[str, int]:
        where = self.wheres[line]
        if where is None:
            where = self.wheres[line] = (self.shown, line)
        return where

    def _anchor(self, name: str) -> None:
        """The node at ``pos`` carries anchor ``name`` (walking an alias meets it again, there)."""
        if self.anchors.setdefault(name, self.pos) != self.pos:
            raise _NotComposable(f"anchor {name!r} given twice")

    def _anchored(self, alias: Any) -> int:
        try:
            return self.anchors[alias.anchor]
        except KeyError:
            raise _NotComposable(f"alias {alias.anchor!r} before its anchor") from None

    def _skip(self) -> None:
        """Past one node (an alias, a scalar, or a collection and all it holds)."""
        depth = 0
        while True:
            e = self.events[self.pos]
            if isinstance(e, yaml.AliasEvent):
                self._anchored(e)
            elif isinstance(e, yaml.NodeEvent) and e.anchor is not None:
                self._anchor(e.anchor)
            self.pos += 1
            if isinstance(e, yaml.CollectionStartEvent):
                depth += 1
            elif isinstance(e, yaml.CollectionEndEvent):
                depth -= 1
            if depth == 0:
                return

    def _include(self, e: yaml.NodeEvent, at: PathKey, line: int, reported: int) -> Any:
        builder = self.builder
        if not isinstance(e, yaml.ScalarEvent):
            self._skip()
            builder.issues.append(
                ConfigIssue(self.shown, reported, format_path(at), "!include takes a file name")
            )
            return None
        self.pos += 1
        if self.locate:
            self.lines[at] = self._where(line)
            return None  # the included file's lines are its own to walk
        target = (self.path.parent / str(e.value)).resolve()
        stack = self.stack
        problem = None
        if target in stack:
            chain = [builder._display(p) for p in stack[stack.index(target) :]]
            problem = f"include cycle: {' -> '.join([*chain, builder._display(target)])}"
        elif len(stack) > _MAX_INCLUDE_DEPTH:
            problem = f"includes nested deeper than {_MAX_INCLUDE_DEPTH}"
        elif not target.is_file():
            problem = f"cannot include {e.value!r}: no such file"
        if problem is not None:
            builder.issues.append(ConfigIssue(self.shown, line, format_path(at), problem))
            builder.failed_includes.add(at)
            return None
        if builder.pending is not None:
            builder.pending.append(_Pending(at, target, stack, len(builder.issues)))
            return None  # read_pending puts it in place
        return builder.load_file(target, at, stack)


_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
# The first characters PyYAML's resolver tries a pattern for (a plain scalar starting with any
# other character is a string); empty when some pattern applies to every first character.
_PATTERN_FIRST = (
    frozenset() if None in _RESOLVER.yaml_implicit_resolvers else frozenset(_RESOLVER.yaml_implicit_resolvers)
)


# C0 and C1 controls (but tab, LF, CR), line/paragraph separators and bidirectional overrides
# (which make a name read differently from what it is)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BINARY_TAG = "tag:yaml.org,2002:binary"
_RAW_SUSPECT = re.compile("[\x85\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _scalar_value(tag: str | None, text: str, implicit: tuple[bool, bool]) -> Any:
    """A scalar as ``yaml.safe_load`` reads it: PyYAML's resolver picks the tag, its
    SafeConstructor builds the value (a str, number, bool, None, date or bytes: immutable).
    A province's names, codes and node ids are each written once: a string the resolver would
    not even try a pattern on (quoted, or plain with a first character no pattern starts
    with) is its text, without a cache entry."""
    if tag is None and (not implicit[0] or (text and _PATTERN_FIRST and text[0] not in _PATTERN_FIRST)):
        return text
    return _constructed(tag, text, implicit)


@functools.lru_cache(maxsize=1 << 18)
def _constructed(tag: str | None, text: str, implicit: tuple[bool, bool]) -> Any:
    if tag is None or tag == "!":
        tag = _RESOLVER.resolve(yaml.ScalarNode, text, implicit)
    if tag == _STR_TAG:
        return text
    if tag == _BINARY_TAG:  # bytes become text unchecked (a NUL in a name): never in a config
        raise ValueError("binary values (!!binary) are not accepted: write the text")
    node = yaml.ScalarNode(tag, text)
    return yaml.constructor.SafeConstructor().construct_object(node)


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


def load_document(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, on_part: PartHook | None = None
) -> Loaded:
    """Load a YAML file (following !include) into data, its source map and its issues.

    ``on_part(at, data, top)`` is called with each file the top-level file includes, at its
    document path (``top``: the top-level file's document), once it has loaded without an issue and before it is put in its place (parts come in
    the order they are read): a caller can start on a part (validate an enterprise) while worker
    processes still read the others."""
    p = Path(path)
    base = Path.cwd().resolve()
    builder = _Builder(p, os.environ if env is None else env, base, gather_includes=True)
    data = builder.read_pending(builder.load_file(p, (), ()), on_part)
    return Loaded(data, builder.source, builder.issues, builder.failed_includes)
