"""The docs build, in every language, and the annotated pages say what they should.

One run of ``scripts/build_docs.sh`` (all four languages, warnings as errors)
into a temporary folder, shared by the tests below; about 20-40 s on two
cores. Skipped only when Sphinx or myst-parser is not installed (the ``docs``
extra; CI installs them through the ``test`` extra).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")

pytestmark = pytest.mark.slow  # one docs build in four languages: 20-50 s

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LANGUAGES = ["en", "zh_CN", "ja", "si"]

# Per language: phrases that must be on the annotated page (terms of art in
# that language), and phrases that must not (the wrong sense of a word:
# "running" as jogging, "transformer" as the electrical device).
MUST = {
    "en": ["No running statistics", "The backward pass, derived", "Numerical stability"],
    "zh_CN": ["层归一化", "批归一化", "运行统计量", "运行均值和运行方差", "Transformer 模型", "梯度", "方差", "均值",
              "反向传播的推导", "数值稳定性"],
    "ja": ["レイヤー正規化", "バッチ正規化", "移動統計量", "移動平均と移動分散", "トランスフォーマー（ニューラルネットワーク）",
           "勾配", "分散", "平均", "逆伝播の導出", "数値安定性"],
    "si": ["ස්තර සාමාන්‍යකරණය", "කාණ්ඩ සාමාන්‍යකරණය", "චලන සංඛ්‍යාන", "ට්‍රාන්ස්ෆෝමර් ආකෘතිය", "අනුක්‍රමණය",
           "විචලතාව", "මධ්‍යන්‍යය", "සංඛ්‍යාත්මක ස්ථායිතාව"],
}
MUST_NOT = {
    "en": [],
    "zh_CN": ["跑步", "变压器", "变换器"],
    "ja": ["ジョギング", "変圧器", "走行"],
    "si": ["දිවීම", "පරිණාමක"],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    # As the docs extra installs it: without Triton, so the kernels' modules are documented from
    # a mocked Triton (their docstrings parsed as they are, which a build with Triton never sees).
    hidden = tmp_path_factory.mktemp("without_triton")
    (hidden / "triton").mkdir()
    (hidden / "triton" / "__init__.py").write_text('raise ImportError("not installed for the docs build")\n')
    path = os.pathsep.join(p for p in (str(hidden), os.environ.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_docs.sh"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": path},  # the interpreter running the tests
    )
    return out / "html", result


def page(built, lang: str, name: str) -> str:
    html, _ = built
    path = html / lang / f"{name}.html"
    assert path.is_file(), f"{path} was not built"
    return path.read_text(encoding="utf-8")


def test_build_succeeds_with_warnings_as_errors(built):
    _, result = built
    assert result.returncode == 0, (
        "scripts/build_docs.sh failed (Sphinx -W: every warning is an error):\n"
        + result.stdout[-6000:] + result.stderr[-3000:]
    )


@pytest.mark.parametrize("lang", LANGUAGES)
def test_annotated_page_has_two_columns_of_explanation_and_code(built, lang):
    text = page(built, lang, "annotated/reference")
    rows = re.findall(r'<div class="annotated-row[^"]*"', text)
    code_rows = re.findall(r'<div class="annotated-code docutils container">', text)
    assert len(rows) > 15 and len(code_rows) > 10
    # Each code column holds Pygments-highlighted Python from reference.py.
    assert text.count('<div class="highlight-python notranslate">') >= len(code_rows)
    assert '<span class="k">def</span><span class="w"> </span><span class="nf">layer_norm_backward</span>' in text
    assert "annotated.css" in text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_annotated_page_has_rendered_math(built, lang):
    text = page(built, lang, "annotated/reference")
    assert re.search(r"<script[^>]+src=\"[^\"]*(mathjax|tex-chtml)[^\"]*\"", text, re.I)
    assert text.count('<div class="math notranslate nohighlight">') >= 8  # display equations
    assert text.count('<span class="math notranslate nohighlight">') >= 40  # inline math
    # LaTeX passes through translation untouched.
    assert r"\frac{\partial L}{\partial x_i}" in text
    assert r"\(\sigma^2 = \overline{x^2} - \mu^2\)" in text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_annotated_page_speaks_the_language(built, lang):
    text = page(built, lang, "annotated/reference")
    assert f'<html lang="{lang.replace("_", "-")}"' in text
    for other in LANGUAGES:  # the sidebar links to this page in every language
        assert f'href="../../{other}/annotated/reference.html"' in text
    missing = [p for p in MUST[lang] if p not in text]
    assert not missing, f"{lang}: missing {missing}"
    wrong = [p for p in MUST_NOT[lang] if p in text]
    assert not wrong, f"{lang}: wrong sense of a term: {wrong}"
    if lang != "en":
        # Every paragraph is translated: no English sentence of the explanation is left.
        for english in ["Batch normalization must keep running means",
                        "subtracts two large, nearly equal numbers",
                        "Summing against", "Ties the explicit forward and backward"]:
            assert english not in text, f"{lang}: untranslated: {english!r}"


class _ListChecker(HTMLParser):
    """Tags balanced, and every <li> directly inside a <ul> or <ol>."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.items = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "li":
            self.items += 1
            if not self.stack or self.stack[-1] not in ("ul", "ol"):
                self.errors.append(f"<li> inside <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
        if tag in ("ul", "ol") and self.stack and self.stack[-1] in ("ul", "ol"):
            self.errors.append(f"<{tag}> directly inside <{self.stack[-1]}> at {self.getpos()}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_lists_stay_valid_html(built, lang):
    text = page(built, lang, "annotated/reference")
    checker = _ListChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack}"
    # The four limits of batch normalization: one ordered list of four items.
    limits = re.search(r'<ol class="arabic[^"]*">(.*?)</ol>', text, re.S)
    assert limits and limits.group(1).count("<li>") == 4
    assert limits.group(1).count("<strong>") == 4  # each item's bold lead survived translation


def test_every_message_of_the_translated_pages_is_translated():
    result = subprocess.run(
        [sys.executable, str(DOCS / "_ext" / "i18n_catalogs.py"), "check"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, (
        "a message of a translated page has no translation: run "
        "`scripts/build_docs.sh --update-po`, translate the new or fuzzy entries "
        "in docs/locale/*/LC_MESSAGES/*.po\n" + result.stdout[-4000:]
    )


def test_api_reference_documents_every_module(built):
    text = page(built, "en", "api")
    for target in ["layernorm.functional.layer_norm", "layernorm.functional.rms_norm",
                   "layernorm.modules.LayerNorm", "layernorm.patch.patch",
                   "layernorm.reference.layer_norm_forward", "layernorm.reference.layer_norm_backward"]:
        assert f'id="{target}"' in text, target
    import layernorm  # every module of the package has its section
    package = Path(layernorm.__file__).parent
    for path in package.rglob("*.py"):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue  # __main__ and private modules are left out
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        assert f'id="module-{module}"' in text, f"{module} is not in the API reference"


def test_measurement_pages_are_included_once_written(built):
    html, _ = built
    for name in ["benchmarks", "kernels-notes", "experiments"]:
        if (DOCS / f"{name}.md").exists():
            assert (html / "en" / f"{name}.html").is_file(), f"docs/{name}.md exists but was not built"
            assert f'href="{name}.html"' in page(built, "en", "index")


def test_the_page_is_generated_from_every_line_of_reference_py():
    """Every line of reference.py lands on the page: as text or as code."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from annotated_source import split_source
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    source = (ROOT / "layernorm" / "reference.py").read_text(encoding="utf-8")
    explanation, code = split_source(source)
    shown = set()
    for section in explanation + code:
        if section.title is not None:
            shown.add(section.title_line)
        for row in section.rows:
            for lines in (row.rst, row.comment, row.code):
                shown.update(number for _, number in lines)
    tree = ast.parse(source)
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert names == {s.title for s in code if s.title}
    for number, text in enumerate(source.split("\n"), start=1):
        stripped = text.strip()
        if not stripped or re.fullmatch(r"=+", stripped) or stripped == '"""':
            continue  # blank, a heading's underline, a docstring's closing quotes
        assert number in shown, f"reference.py:{number} is not on the page: {text!r}"
