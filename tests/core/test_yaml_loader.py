"""core.yaml_loader reads a file exactly as ``yaml.safe_load`` does, with a line for every path.

The loader builds data straight from libyaml's events (no node tree: a province's config
would take minutes); these cases pin it to PyYAML's own composer and constructors: the same
values, and for every path the line of its key (mapping entries) or of its node (items).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import yaml_loader
from core.yaml_loader import PathKey, load_document

DOCUMENTS = {
    "scalars": """
a: 1
b: 1.5
c: true
d: null
e: ~
f: "quoted 1"
g: '2'
h: 2024-05-01
i: 0x1f
j: 1e3
k: .inf
l: yes
m: !!str 12
n: ''
""",
    "collections": """
top:
  - {x: 1, y: [1, 2, {z: 3}]}
  - - nested
    - list
  -
    key: value
empty_map: {}
empty_list: []
""",
    "anchors": """
base: &b {limit: 5, unit: m}
copy: *b
list: [&one 1, *one, *one]
&k key: v
""",
    "block_scalars": """
text: |
  line one
  line two
folded: >
  folded
  text
after: 7
""",
    "strings_and_lookalikes": """
plain: V101 LT-0001
chinese: 储罐区 液位
node: s=V01.LT-0001
yes_word: Yes
no_word: NO
on_word: on
off_word: Off
null_word: NULL
tilde: ~
half: .5
neg: -1
pos: +1
octal: 0o17
sexagesimal: 1:20
date_like: 2024-05-01 10:00:00
quoted_number: "12"
quoted_bool: 'true'
non_specific: ! 12
bang_text: '!x'
empty_plain:
list: [a, 1, "1", null, Null, b c]
""",
    "no_document": "# only a comment\n",
    "empty_document": "---\n",
}


def _compose_lines(node: yaml.Node | None, at: PathKey, lines: dict[PathKey, int]) -> None:
    """The lines PyYAML's node tree gives each path: a key's line, else the node's."""
    if node is None:
        return
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[(*at, key.value)] = key.start_mark.line + 1
            _compose_lines(value, (*at, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _compose_lines(item, (*at, i), lines)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_values_and_lines_match_pyyaml(name: str, tmp_path: Path) -> None:
    text = DOCUMENTS[name]
    (tmp_path / "doc.yaml").write_text(text, encoding="utf-8")
    loaded = load_document(tmp_path / "doc.yaml", env={})
    assert loaded.issues == []
    expected: Any = yaml.safe_load(text)
    assert loaded.data == ({} if expected is None and not text.startswith("---") else expected)
    want: dict[PathKey, int] = {}
    _compose_lines(yaml.compose(text, Loader=yaml.SafeLoader), (), want)
    assert {path: line for path, (_, line) in loaded.source.lines.items()} == want


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: 1\n---\nb: 2\n", 2, "but found another document"),
        ("a: *nowhere\n", 1, "found undefined alias 'nowhere'"),
        ("a: &x 1\nb: &x 2\n", 2, "second occurrence"),
        ("a: [1, 2\nb: 3\n", 1, "is not closed"),
    ],
)
def test_what_the_composer_refuses_is_one_yaml_error_at_its_line(
    text: str, line: int, message: str, tmp_path: Path
) -> None:
    (tmp_path / "doc.yaml").write_text(text, encoding="utf-8")
    loaded = load_document(tmp_path / "doc.yaml", env={})
    [issue] = loaded.issues
    assert issue.line == line
    assert issue.message.startswith("YAML syntax: ")
    assert message in issue.message


def test_duplicate_and_complex_keys_are_reported_and_the_rest_still_loads(tmp_path: Path) -> None:
    text = "a: 1\n? [x, y]\n: skipped\na: 2\nb: ${HOME_DIR:-/srv}\n"
    (tmp_path / "doc.yaml").write_text(text, encoding="utf-8")
    loaded = load_document(tmp_path / "doc.yaml", env={})
    assert [(i.line, i.path, i.message) for i in loaded.issues] == [
        (2, "", "mapping keys must be plain strings"),
        (4, "a", "duplicate key"),
    ]
    assert loaded.data == {"a": 2, "b": "/srv"}


def test_an_aliased_include_is_included_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "part.yaml").write_text("x: 1\n", encoding="utf-8")
    (tmp_path / "doc.yaml").write_text("a: &p !include part.yaml\nb: *p\n", encoding="utf-8")
    loaded = load_document(tmp_path / "doc.yaml", env={})
    assert loaded.issues == []
    assert loaded.data == {"a": {"x": 1}, "b": {"x": 1}}
    assert loaded.source.where(("b", "x")) == ("part.yaml", 1)


def test_an_explicit_tag_that_cannot_be_read_is_an_error_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "doc.yaml").write_text("a: !foo bar\nb: !!int abc\nc: 1\n", encoding="utf-8")
    loaded = load_document(tmp_path / "doc.yaml", env={})
    assert [(i.line, i.path, i.message) for i in loaded.issues] == [
        (1, "a", "YAML: could not determine a constructor for the tag '!foo'"),
        (2, "b", "YAML: invalid literal for int() with base 10: 'abc'"),
    ]
    assert loaded.data["c"] == 1
    assert loaded.failed_includes == {("a",), ("b",)}


# A top-level file whose includes carry every kind of problem, in order: a line before, between
# and after them, an include that cannot be found, a nested include, an alias of an include.
_PARTS = {
    "root.yaml": (
        "a: ${UNSET_BEFORE}\n"
        "parts:\n"
        "  - !include p1.yaml\n"
        "  - !include missing.yaml\n"
        "  - &two !include p2.yaml\n"
        "  - *two\n"
        "b: 1\n"
        "b: 2\n"
    ),
    "p1.yaml": "x: 1\nx: 2\ny: ${UNSET_IN_P1}\nnested: !include sub/p3.yaml\n",
    "p2.yaml": "list:\n  - {k: v}\n  - !!int abc\n",
    "sub/p3.yaml": "deep:\n  z: ${UNSET_DEEP:-fallback}\n  w: [1, 2]\n  dup: 1\n  dup: 2\n",
}


def _write_parts(folder: Path) -> Path:
    for name, text in _PARTS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder / "root.yaml"


def _eager_lines(folder: Path) -> dict[PathKey, tuple[str, int]]:
    """What PyYAML's own node trees give every path of the parts document."""
    out: dict[PathKey, tuple[str, int]] = {}

    def walk(node: yaml.Node | None, at: PathKey, file: str) -> None:
        assert node is not None
        out.setdefault(at, (file, node.start_mark.line + 1))
        if node.tag == "!include":
            assert isinstance(node.value, str)
            name = str(Path(file).parent / node.value)
            out[at] = (file, node.start_mark.line + 1)
            if (folder / name).exists():
                walk(
                    yaml.compose((folder / name).read_text(encoding="utf-8"), Loader=yaml.SafeLoader),
                    at,
                    name,
                )
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                out[(*at, key.value)] = (file, key.start_mark.line + 1)
                walk(value, (*at, key.value), file)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*at, i), file)

    walk(yaml.compose(_PARTS["root.yaml"], Loader=yaml.SafeLoader), (), "root.yaml")
    return out


pools: list[int] = []


class _CountingPool(ProcessPoolExecutor):
    def __init__(self, workers: int, **kwargs: Any) -> None:
        pools.append(workers)
        super().__init__(workers, **kwargs)


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "worker-processes"])
def test_included_files_read_in_parallel_or_not_give_the_same_data_issues_and_lines(
    parallel: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Included files are read without their lines (by workers when there is enough YAML);
    the document, its issues in document order and every path's line are what one eager walk
    gave, and a line is found on the first lookup that needs it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(yaml_loader, "_PARALLEL_MIN_BYTES", 0 if parallel else 1 << 40)
    pools.clear()
    monkeypatch.setattr(yaml_loader, "ProcessPoolExecutor", _CountingPool)
    loaded = load_document(_write_parts(tmp_path), env={})
    if len(os.sched_getaffinity(0)) >= 2:
        assert pools == ([2] if parallel else [])  # two workers for the two files it includes
    p2 = {"list": [{"k": "v"}, None]}
    assert loaded.data == {
        "a": "",
        "parts": [
            {"x": 2, "y": "", "nested": {"deep": {"z": "fallback", "w": [1, 2], "dup": 2}}},
            None,
            p2,
            p2,
        ],
        "b": 2,
    }
    assert [str(i) for i in loaded.issues] == [
        "root.yaml:1 a: environment variable UNSET_BEFORE is not set",
        "p1.yaml:2 parts[0].x: duplicate key",
        "p1.yaml:3 parts[0].y: environment variable UNSET_IN_P1 is not set",
        "sub/p3.yaml:5 parts[0].nested.deep.dup: duplicate key",
        "root.yaml:4 parts[1]: cannot include 'missing.yaml': no such file",
        "p2.yaml:3 parts[2].list[1]: YAML: invalid literal for int() with base 10: 'abc'",
        "p2.yaml:3 parts[3].list[1]: YAML: invalid literal for int() with base 10: 'abc'",
        "root.yaml:8 b: duplicate key",
    ]
    assert loaded.failed_includes == {("parts", 1), ("parts", 2, "list", 1), ("parts", 3, "list", 1)}
    # one lookup walks only the files on its path; then every line is the eager walk's
    assert loaded.source.where(("parts", 0, "nested", "deep", "w", 1)) == ("sub/p3.yaml", 3)
    assert loaded.source.where(("parts", 3, "list", 0, "k")) == ("p2.yaml", 2)
    assert loaded.source.lines == _eager_lines(tmp_path)


def test_control_characters_in_text_are_refused_where_they_are(tmp_path: Path) -> None:
    """A double-quoted escape or an environment variable can put a control character in a name;
    PostgreSQL cannot store NUL and the rest garble messages, so each is an issue at its line.
    Tab, line feed and carriage return are text; plain and single-quoted scalars cannot hold
    control characters at all (libyaml refuses them in the stream)."""
    doc = tmp_path / "plant.yaml"
    doc.write_text(
        "\n".join(
            [
                'a: "液位\\0"',
                "b:",
                '  - "bell\\a"',
                '  - "tab\\tnewline\\ncr\\r ok"',
                'c: {d: "del\\x7f"}',
                "e: ${HW_NAME}",
                "f: 'quoted \\0 is text'",
                'g: "csi\\x9b2J"',
                'h: "右\\u202e左"',
                "i: !!binary AEE=",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    loaded = load_document(doc, env={"HW_NAME": "x\x1by"})
    assert [str(i) for i in loaded.issues] == [
        f"{doc}:1 a: control character U+0000 in the text: remove it (names and messages are stored in PostgreSQL and sent by SMS)",
        f"{doc}:3 b[0]: control character U+0007 in the text: remove it (names and messages are stored in PostgreSQL and sent by SMS)",
        f"{doc}:5 c.d: control character U+007F in the text: remove it (names and messages are stored in PostgreSQL and sent by SMS)",
        f"{doc}:6 e: control character U+001B in the text after substituting environment variables: remove it (names and messages are stored in PostgreSQL and sent by SMS)",
        f"{doc}:8 g: control character U+009B in the text: remove it (names and messages are stored in PostgreSQL and sent by SMS)",
        f"{doc}:9 h: control character U+202E in the text: remove it (names and messages are stored in PostgreSQL and sent by SMS)",
        f"{doc}:10 i: YAML: binary values (!!binary) are not accepted: write the text",
    ]
    assert loaded.data["b"][1] == "tab\tnewline\ncr\r ok" and loaded.data["f"] == "quoted \\0 is text"


def test_a_raw_bidirectional_override_or_line_separator_is_refused(tmp_path: Path) -> None:
    """Unquoted, libyaml passes them through: a tag name that reads differently from what it is."""
    for char in ("\u202e", "\u2066", "\u2028"):
        doc = tmp_path / "plant.yaml"
        doc.write_text(f"a: 1\nname: 液位{char}计\n", encoding="utf-8")
        loaded = load_document(doc, env={})
        assert [str(i) for i in loaded.issues] == [
            f"{doc}:2: character U+{ord(char):04X} (a line separator or bidirectional override: the text "
            "would read differently from what it is): remove it"
        ]
