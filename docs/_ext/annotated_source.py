"""Sphinx directive ``annotated-source``: a Python file as an annotated page.

The explanation sits beside the code it explains, in two columns, section by
section, in the manner of Docco and labml.ai's annotated implementations. The
page is generated from the file on every build, so it can never drift from
the code::

    .. annotated-source:: ../../layernorm/reference.py
       :part: explanation
       :sections: intro
                  Numerical stability

    .. annotated-source:: ../../layernorm/reference.py
       :part: code
       :sections: layer_norm_forward
                  *

``:sections:`` weaves the explanation and the code: one name a line, in the
order to show them (a heading of the module docstring, a top-level ``def`` or
``class``, ``intro``, ``preamble``, or ``*`` for everything of that part the
page has not shown yet). A name the file no longer has is skipped, and a final
``*`` makes sure nothing of the file is left out.

How the file is split:

* ``:part: explanation`` -- the module docstring (reStructuredText). Its
  headings (a line underlined with ``=``) become sections of the page; the
  text before the first heading is the introduction.
* ``:part: code`` -- the code after the module docstring. Every top-level
  ``def`` and ``class`` is a section, titled with its name. Its docstring
  (reStructuredText) goes on the left and its code, without the docstring, on
  the right. A comment on lines of its own starts a new row: the comment on
  the left, the code that follows it on the right, so a function can be
  annotated line by line. Comments at the end of a line of code stay in the
  code (and are not translated). What comes before the first ``def``
  (imports, constants) is one row of its own.

Everything on the left -- docstrings and full-line comments alike -- is
reStructuredText parsed as part of the page: ``:math:`` and ``.. math::``
render through Sphinx's math support, ``:eq:`` and ``:ref:`` link to the
equations and sections of the page, and the paragraphs are translatable
messages of this page for gettext (their msgids are the docstring and
comment paragraphs; display math is left out of the catalogs, as LaTeX reads
the same in every language). Code is highlighted by Pygments and never
translated.

Anchors, the same in every language:

* a section of the module docstring gets the label written before its
  heading (``.. _numerical-stability:`` on a line of its own, as anywhere in
  reStructuredText), for ``:ref:`numerical-stability``` from any page;
* a code section gets the label ``code-<name>`` (``:ref:`code-layer_norm_forward```),
  and its HTML id ``code-<name>`` with dashes;
* every row with code gets the id ``<file>-<line>`` (``reference-py-243``),
  and its ``reference.py:243`` label is a link to that row.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

__all__ = ["AnnotatedSource", "setup", "split_source"]

# A line of text followed by a line of '=' at least as long: a section heading.
_UNDERLINE = re.compile(r"^=+\s*$")
# An explicit target on a line of its own: ``.. _name:`` labels the heading after it.
_LABEL = re.compile(r"^\.\. _([A-Za-z0-9][\w.-]*):\s*$")

Lines = List[Tuple[str, int]]  # (text, line number in the file)


@dataclass
class Row:
    """One row of the page: explanation on the left, code on the right."""

    rst: Lines = field(default_factory=list)  # reStructuredText (docstrings)
    comment: Lines = field(default_factory=list)  # plain text (# comments)
    code: Lines = field(default_factory=list)


@dataclass
class Section:
    """A titled part of the page, made of rows."""

    title: Optional[str]
    title_line: int
    is_code_name: bool  # title is a Python name, shown as code and not translated
    rows: List[Row] = field(default_factory=list)
    label: Optional[str] = None  # ``.. _label:`` written before the heading


def _docstring_lines(expr: ast.Expr) -> Lines:
    """A docstring's cleaned lines, each with its line number in the file."""
    raw = expr.value.value  # type: ignore[attr-defined]
    skipped = 0  # lines before the first one with text: cleandoc drops them
    for line in raw.split("\n"):
        if line.strip():
            break
        skipped += 1
    cleaned = inspect.cleandoc(raw).split("\n")
    first = expr.lineno + skipped
    return [(text, first + i) for i, text in enumerate(cleaned)]


def _is_heading(lines: Lines, i: int) -> bool:
    text = lines[i][0]
    next_text = lines[i + 1][0] if i + 1 < len(lines) else ""
    return bool(text.strip()) and bool(_UNDERLINE.match(next_text)) and len(next_text.strip()) >= len(text.strip())


def _split_module_docstring(lines: Lines) -> List[Section]:
    """The introduction, then one section per '=' heading (with the label
    written before it, if any)."""
    sections = [Section(None, lines[0][1] if lines else 1, False, [Row()])]
    label = None
    i = 0
    while i < len(lines):
        text, number = lines[i]
        match = _LABEL.match(text)
        if match:
            j = i + 1
            while j < len(lines) and not lines[j][0].strip():
                j += 1
            if j < len(lines) and _is_heading(lines, j):
                label, i = match.group(1), j
                continue
        if _is_heading(lines, i):
            sections.append(Section(text.strip(), number, False, [Row()], label))
            label = None
            i += 2
            continue
        sections[-1].rows[0].rst.append((text, number))
        i += 1
    if not any(t.strip() for t, _ in sections[0].rows[0].rst):
        sections.pop(0)
    return sections


def _full_line_comments(source: str) -> set:
    """Line numbers holding nothing but a comment (found by the tokenizer, so a
    '#' inside a string is not taken for one)."""
    found = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and token.line.strip().startswith("#"):
            found.add(token.start[0])
    return found


def split_source(source: str) -> Tuple[List[Section], List[Section]]:
    """Split a Python file into (explanation sections, code sections)."""
    tree = ast.parse(source)
    lines = source.split("\n")
    body = list(tree.body)

    explanation: List[Section] = []
    code_start = 1
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        explanation = _split_module_docstring(_docstring_lines(body[0]))
        code_start = body[0].end_lineno + 1
        body = body[1:]

    # Top-level definitions: where each starts (decorators included) and its docstring.
    starts = {}
    docstrings = {}  # first line of a docstring -> (last line, its lines)
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            starts[first] = node.name
            doc = node.body[0] if node.body else None
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                docstrings[doc.lineno] = (doc.end_lineno, _docstring_lines(doc))

    comments = _full_line_comments(source)
    sections: List[Section] = [Section(None, code_start, True, [Row()])]
    number = code_start
    while number <= len(lines):
        text = lines[number - 1]
        if number in starts:
            pending = sections[-1].rows[-1]
            section = Section(starts[number], number, True, [Row()])
            if not pending.code and (pending.comment or pending.rst):
                # A comment just above a definition introduces it.
                sections[-1].rows.pop()
                section.rows[0] = pending
            sections.append(section)
        if number in docstrings:
            last, doc_lines = docstrings[number]
            sections[-1].rows[-1].rst.extend(doc_lines)
            number = last + 1
            continue
        if number in comments:
            row = sections[-1].rows[-1]
            if row.code or row.rst:
                row = Row()
                sections[-1].rows.append(row)
            comment = text.strip()[1:]
            row.comment.append((comment[1:] if comment.startswith(" ") else comment, number))
        else:
            sections[-1].rows[-1].code.append((text, number))
        number += 1

    for section in sections:
        for row in section.rows:
            while row.code and not row.code[-1][0].strip():
                row.code.pop()
            while row.code and not row.code[0][0].strip():
                row.code.pop(0)
        section.rows = [r for r in section.rows if r.code or r.rst or r.comment]
    sections = [s for s in sections if s.rows]
    return explanation, sections


def _section_key(section: Section) -> str:
    """How ``:sections:`` names a section: its title or Python name; the text
    before the first heading is ``intro``, the code before the first ``def`` is
    ``preamble``."""
    if section.title is not None:
        return section.title
    return "preamble" if section.is_code_name else "intro"


class AnnotatedSource(SphinxDirective):
    """``.. annotated-source:: PATH`` with ``:part:`` and ``:sections:``."""

    required_arguments = 1
    has_content = False
    option_spec = {
        "part": lambda arg: directives.choice(arg, ("explanation", "code", "all")),
        # One name a line: a heading of the module docstring, a top-level name,
        # ``intro``, ``preamble``, or ``*`` for every section of the part that
        # this page has not shown yet.
        "sections": lambda arg: [line.strip() for line in (arg or "").splitlines() if line.strip()],
    }

    def run(self) -> List[nodes.Node]:
        relative, path_str = self.env.relfn2path(self.arguments[0], self.env.docname)
        path = Path(path_str)
        if not path.is_file():
            raise self.error(f"annotated-source: no such file: {path}")
        self.env.note_dependency(relative)
        source = path.read_text(encoding="utf-8")
        try:
            explanation, code = split_source(source)
        except SyntaxError as error:
            raise self.error(f"annotated-source: cannot parse {path}: {error}")

        part = self.options.get("part", "all")
        candidates = []
        if part in ("explanation", "all"):
            candidates += [("explain", s) for s in explanation]
        if part in ("code", "all"):
            candidates += [("code", s) for s in code]

        # Sections already shown on this page (by an earlier annotated-source).
        shown = self.env.temp_data.setdefault("annotated-source-shown", {}).setdefault(str(path), set())
        wanted = self.options.get("sections", ["*"])
        chosen = []
        for name in wanted:
            for prefix, section in candidates:
                key = (prefix, _section_key(section))
                if key in shown or (name != "*" and name != key[1]):
                    continue
                chosen.append((prefix, section))
                shown.add(key)
            # A name that matches nothing (renamed in the file) is no error:
            # a later ``*`` still shows the section under its new name.

        self._path = path
        result: List[nodes.Node] = []
        for prefix, section in chosen:
            result.extend(self._section(section, prefix))
        return result

    def _section(self, section: Section, prefix: str) -> List[nodes.Node]:
        rows = [self._row(row) for row in section.rows]
        if section.title is None:
            return rows
        document = self.state.document
        node = nodes.section()
        result: List[nodes.Node] = []
        if section.is_code_name:
            # Not a message for translators: a Python name reads the same in every language.
            title = nodes.title("", "", nodes.literal(section.title, section.title))
            title["translatable"] = False
            # An explicit label, for :ref:`code-layer_norm_forward` from any page.
            node["ids"].append(nodes.make_id(f"{prefix}-{section.title}"))
            node["names"].append(nodes.fully_normalize_name(f"{prefix}-{section.title}"))
            document.note_explicit_target(node, node)
        else:
            title = nodes.title(section.title, section.title)
            title.source, title.line = str(self._path), section.title_line
            node["names"].append(nodes.fully_normalize_name(section.title))
            document.note_implicit_target(node, node)
            if section.label:
                name, anchor = nodes.fully_normalize_name(section.label), nodes.make_id(section.label)
                if anchor in node["ids"]:
                    # The label is the heading's own anchor ("numerical-stability"): make it explicit.
                    if name not in node["names"]:
                        node["names"].append(name)
                    document.nameids[name], document.nametypes[name] = anchor, True
                else:
                    # As ``.. _label:`` before a heading in any reStructuredText: a
                    # target that docutils moves onto the section.
                    target = nodes.target("", "", ids=[anchor], names=[name])
                    target.source, target.line = str(self._path), section.title_line
                    document.note_explicit_target(target, target)
                    result.append(target)
        node += title
        node.extend(rows)
        result.append(node)
        return result

    def _row(self, row: Row) -> nodes.Node:
        chunk = nodes.container(classes=["annotated-row"] + ([] if row.code else ["annotated-prose"]))
        left = nodes.container(classes=["annotated-doc"])
        right = nodes.container(classes=["annotated-code"])
        if row.rst:
            self._parse_rst(row.rst, left)
        if row.comment:
            comment = nodes.container(classes=["annotated-comment"])
            self._parse_rst(row.comment, comment)
            left += comment
        if row.code:
            code = "\n".join(t for t, _ in row.code)
            first = row.code[0][1]
            # The row's own anchor, and its "reference.py:243" label a link to it.
            anchor = nodes.make_id(f"{self._path.name}-{first}")
            if anchor not in self.state.document.ids:
                chunk["ids"].append(anchor)
                self.state.document.ids[anchor] = chunk
            where = nodes.container(classes=["annotated-where"])
            link = nodes.reference("", f"{self._path.name}:{first}", internal=True, refid=anchor)
            where += nodes.inline("", "", link)
            right += where
            block = nodes.literal_block(code, code, language="python")
            block["highlight_args"] = {}
            right += block
        else:
            right["classes"].append("annotated-empty")
        chunk += left
        chunk += right
        return chunk

    def _parse_rst(self, lines: Lines, parent: nodes.Element) -> None:
        content = StringList()
        for text, number in lines:
            # items are (source, offset): errors point at the line of the file.
            content.append(text, str(self._path), number - 1)
        self.state.nested_parse(content, 0, parent)
        # LaTeX is the same in every language: keep it out of the catalogs.
        for block in parent.findall(nodes.math_block):
            block["translatable"] = False


def setup(app):
    app.add_directive("annotated-source", AnnotatedSource)
    app.add_css_file("annotated.css")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
