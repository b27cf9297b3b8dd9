"""core.yaml_loader reads a file exactly as ``yaml.safe_load`` does, with a line for every path.

The loader builds data straight from libyaml's events (no node tree: a province's config
would take minutes); these cases pin it to PyYAML's own composer and constructors: the same
values, and for every path the line of its key (mapping entries) or of its node (items).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

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
