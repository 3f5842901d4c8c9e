"""The docs build, in every language, and the annotated pages say what they should.

One run of ``scripts/build_docs.sh`` (all four languages, warnings as errors)
into a temporary folder, shared by the tests below; about 30-50 s on two
cores, the whole module included. Skipped only when Sphinx or myst-parser is not installed (the ``docs``
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

pytestmark = pytest.mark.slow  # one docs build in four languages: 30-60 s

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LANGUAGES = ["en", "zh_CN", "ja", "si"]

# Per language: phrases that must be on the annotated page (terms of art in
# that language), and phrases that must not (the wrong sense of a word:
# "running" as jogging, "transformer" as the electrical device).
MUST = {
    "en": ["No running statistics", "The backward pass, derived", "Numerical stability",
           "Layer Normalization for PyTorch"],
    "zh_CN": ["层归一化", "批归一化", "运行统计量", "运行均值和运行方差", "Transformer 模型", "梯度", "方差", "均值",
              "反向传播的推导", "数值稳定性"],
    "ja": ["レイヤー正規化", "バッチ正規化", "移動統計量", "移動平均と移動分散", "トランスフォーマー（ニューラルネットワーク）",
           "勾配", "分散", "平均", "逆伝播の導出", "数値安定性"],
    "si": ["ස්තර සාමාන්‍යකරණය", "කාණ්ඩ සාමාන්‍යකරණය", "චලන සංඛ්‍යාන", "ට්‍රාන්ස්ෆෝමර් ආකෘතිය", "අනුක්‍රමණය",
           "විචලතාව", "මධ්‍යන්‍යය", "සංඛ්‍යාත්මක ස්ථායිතාව"],
}
MUST_NOT = {
    "en": [],
    # 小数 is "a decimal fraction", not "a small number"; 小批量 is the mini-batch, not the
    # "small batches" of the third limit; "8 位有效数字" reads as eight decimal digits.
    "zh_CN": ["跑步", "变压器", "变换器", "小数", "<strong>小批量", "位有效数字"],
    # 行方向の和 (a sum along each row) for a sum over the rows; パラメータは簡単 (the
    # parameters are simple) for "the parameters' gradients are the easy part".
    "ja": ["ジョギング", "変圧器", "走行", "行方向の和", "パラメータは簡単"],
    # ව්‍යුත්පන්නය is a derivative, not a derivation; අවලංගු වීම is an annulment, not the
    # numerical cancellation of nearly equal numbers.
    "si": ["දිවීම", "පරිණාමක", "ව්‍යුත්පන්න", "අවලංගු වීම"],
}
CJK = "\u3000-\u30ff\u3400-\u9fff\uff00-\uffef"
# A character of the language's own script, for "this text is translated".
SCRIPT = {"zh_CN": re.compile(r"[\u4e00-\u9fff]"), "ja": re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]"),
          "si": re.compile(r"[\u0d80-\u0dff]")}
PAGES = ["index", "api", "annotated/reference", "benchmarks", "kernels-notes", "experiments"]


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
    assert len(re.findall(r'<div class="math notranslate nohighlight"[^>]*>', text)) >= 8  # display equations
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
                        "Summing against", "Ties the explicit forward and backward",
                        "small numbers, computed almost exactly", "Second row reduction",
                        "Layer Normalization for PyTorch", "Next page"]:
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
                   "layernorm.modules.LayerNorm", "layernorm.patching.swap.patch",
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
    labels = {s.label for s in explanation if s.label}
    for number, text in enumerate(source.split("\n"), start=1):
        stripped = text.strip()
        if not stripped or re.fullmatch(r"=+", stripped) or stripped == '"""':
            continue  # blank, a heading's underline, a docstring's closing quotes
        label = re.fullmatch(r"\.\. _([\w.-]+):", stripped)
        if label:  # ``.. _name:`` before a heading: the anchor of its section
            assert label.group(1) in labels, f"reference.py:{number}: {text!r} labels no heading"
            continue
        assert number in shown, f"reference.py:{number} is not on the page: {text!r}"


# --- The annotated forward and backward: a translated comment beside each line ---


class _Rows(HTMLParser):
    """The rows of one code section of the annotated page: for each, the text of its
    comment (left) and of its code (right)."""

    def __init__(self, section_id):
        super().__init__()
        self.section_id, self.rows = section_id, []
        self.sections = 0  # <section> depth inside the wanted section; 0: outside
        self.comment_divs = 0  # <div> depth inside a comment; 0: outside
        self.in_code = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "section":
            if self.sections or attrs.get("id") == self.section_id:
                self.sections += 1
            return
        if not self.sections:
            return
        if tag == "div":
            if self.comment_divs:
                self.comment_divs += 1
            elif "annotated-comment" in classes:
                self.comment_divs = 1
            elif "annotated-row" in classes:
                self.rows.append({"comment": "", "code": ""})
        elif tag == "pre":
            self.in_code = True
        elif tag == "span" and self.in_code and "c1" in classes:
            self.rows[-1]["code"] += "\0COMMENT\0"  # a comment token inside the code

    def handle_endtag(self, tag):
        if tag == "section" and self.sections:
            self.sections -= 1
        elif tag == "div" and self.comment_divs:
            self.comment_divs -= 1
        elif tag == "pre":
            self.in_code = False

    def handle_data(self, data):
        if self.sections and self.rows:
            if self.comment_divs:
                self.rows[-1]["comment"] += data
            elif self.in_code:
                self.rows[-1]["code"] += data


def code_rows(text, section_id):
    parser = _Rows(section_id)
    parser.feed(text)
    assert parser.rows, f"no rows in section {section_id}"
    return parser.rows


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("function", ["layer_norm_forward", "layer_norm_backward",
                                      "rms_norm_forward", "rms_norm_backward"])
def test_every_line_of_the_passes_has_its_step_beside_it(built, lang, function):
    """Line by line: every row of code after the signature has a comment, in the
    page's language, and no step is left as an English comment inside the code."""
    rows = code_rows(page(built, lang, "annotated/reference"), "code-" + function.replace("_", "-"))
    body = [r for r in rows if r["code"].strip() and not r["code"].lstrip().startswith("def ")]
    assert len(body) >= 4, body
    for row in body:
        assert row["comment"].strip(), f"{lang} {function}: no comment beside {row['code'].strip()!r}"
        assert "\0COMMENT\0" not in row["code"], f"{lang} {function}: a comment inside the code: {row['code']!r}"
        if lang != "en":
            assert SCRIPT[lang].search(row["comment"]), (
                f"{lang} {function}: untranslated comment {row['comment'].strip()!r}")
    if lang != "en":  # and not the English one
        english = {r["code"]: r["comment"] for r in code_rows(page(built, "en", "annotated/reference"),
                                                              "code-" + function.replace("_", "-"))}
        for row in body:
            assert row["comment"] != english.get(row["code"]), row["comment"]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_steps_link_to_their_equations_and_the_lines_to_themselves(built, lang):
    text = page(built, lang, "annotated/reference")
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    # The equations are numbered and labelled, and the comments of the code refer to them.
    for label in ["layer-norm", "two-pass", "param-grads", "ln-dx", "rms-norm", "rms-backward"]:
        assert f"equation-{label}" in ids, label
    forward = text[text.index('id="code-layer-norm-forward"'):text.index('id="the-backward-pass-derived"')]
    assert 'href="#equation-two-pass"' in forward and 'href="#equation-layer-norm"' in forward
    backward = text[text.index('id="code-layer-norm-backward"'):]
    assert 'href="#equation-ln-dx"' in backward
    # "reference.py:243" is a link to its own row.
    where = re.findall(r'<a class="reference internal" href="#(reference-py-(\d+))">reference\.py:(\d+)</a>', text)
    assert len(where) > 20
    for anchor, line, shown in where:
        assert line == shown and anchor in ids, anchor


# --- Links: the paper, PyTorch, the experiments, the sections ---

PAPER = "https://arxiv.org/abs/1607.06450"
PYTORCH = "https://docs.pytorch.org/docs/stable/generated/"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_links_to_the_paper_pytorch_and_the_experiments(built, lang):
    text = page(built, lang, "annotated/reference")
    for url in [PAPER, "https://arxiv.org/abs/1502.03167", "https://arxiv.org/abs/1910.07467",
                PYTORCH + "torch.nn.LayerNorm.html", PYTORCH + "torch.nn.functional.layer_norm.html",
                PYTORCH + "torch.nn.RMSNorm.html", PYTORCH + "torch.nn.functional.rms_norm.html"]:
        assert f'href="{url}"' in text, url
    assert f'href="{PAPER}"' in page(built, lang, "index")
    # Each limit of batch normalization links to the experiment that shows it.
    limits = re.search(r'<ol class="arabic[^"]*">(.*?)</ol>', text, re.S).group(1)
    items = re.findall(r"<li>(.*?)</li>", limits, re.S)
    experiments = page(built, lang, "experiments")
    for item, name in zip(items, ["running-stats", "rnn", "small-batch", "distributed"]):
        assert f'href="../experiments.html#experiment-{name}"' in item, name
        assert f'id="experiment-{name}"' in experiments, name
    assert 'href="../experiments.html#experiment-transformer"' in text
    # The API reference links PyTorch's names to PyTorch's documentation.
    if lang == "en":
        api = page(built, "en", "api")
        assert f'href="{PYTORCH}torch.nn.LayerNorm.html"' in api
        assert "Should be overridden by all subclasses" not in api  # nn.Module.forward's text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_sections_have_explicit_anchors(built, lang):
    anchors = {
        "annotated/reference": ["layer-norm-math", "batch-norm-limits", "numerical-stability",
                                "backward-derived", "rmsnorm", "shapes", "code-layer-norm-forward"],
        "index": ["home"],
        "api": ["api-reference"],
        "benchmarks": ["bench-setup", "bench-layer-norm-targets", "bench-shortfalls", "bench-tables"],
        "kernels-notes": ["kernels-state", "kernels-launch-path", "kernels-predictions"],
    }
    for name, ids in anchors.items():
        text = page(built, lang, name)
        for anchor in ids:
            assert f'id="{anchor}"' in text, f"{lang} {name}: no anchor {anchor}"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag in ("a", "link", "img", "script") and (attrs.get("href") or attrs.get("src")):
            self.hrefs.append(attrs.get("href") or attrs.get("src"))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_link_resolves_and_stays_in_the_docs(built, lang):
    """Each link of the pages goes to a page or file of the built docs (and to an
    anchor that exists there), or to a public https:// address; nothing points
    outside the site, like ../shared/ or a file of the repository."""
    html, _ = built
    root = (html / lang).resolve()
    parsed = {}

    def parse(path):
        if path not in parsed:
            parser = _Links()
            parser.feed(path.read_text(encoding="utf-8"))
            parsed[path] = parser
        return parsed[path]

    for name in PAGES:
        source = root / f"{name}.html"
        for href in parse(source).hrefs:
            if href.startswith("https://"):
                continue
            assert not re.match(r"^[a-z]+:", href), f"{lang} {name}: {href}"
            target, _, fragment = href.partition("#")
            target = target.partition("?")[0]
            path = (source.parent / target).resolve() if target else source
            assert path.is_relative_to(html.resolve()), f"{lang} {name}: {href} leaves the docs"
            assert path.exists(), f"{lang} {name}: {href} is missing"
            if fragment and path.suffix == ".html":
                assert fragment in parse(path).ids, f"{lang} {name}: no anchor for {href}"


# --- Written for readers: no internal vocabulary ---

INTERNAL = re.compile(
    r"\bissues?\s*#?\d|\b(?:the|this|that|an|open|our|GitHub)\s+issues?\b|\bsessions?\b"
    r"|\.\./shared|\bthe next person\b|\bbar of\b|\bdevice (?:call|tool)\b",
    re.I)


def test_no_page_speaks_of_issues_sessions_or_shared_files(built):
    html, _ = built
    for lang in LANGUAGES:
        for name in PAGES:
            text = re.sub(r"<[^>]+>", " ", page(built, lang, name))
            found = INTERNAL.findall(text)
            assert not found, f"{lang}/{name}.html: {found}"
    for path in [ROOT / "README.md", *DOCS.glob("*.md"), *DOCS.glob("*.rst")]:
        found = INTERNAL.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.relative_to(ROOT)}: {found}"


def test_internal_vocabulary_check_catches_it():
    """The check above is no tautology: it finds the phrasings it is for."""
    for bad in ["the bar of issue 3", "see issue #12", "in this session", "../shared/bench.json",
                "for the next person", "the time limit of a device call"]:
        assert INTERNAL.search(bad), bad
    for fine in ["issue a PatchWarning for each module", "a sessile mode"]:
        assert not INTERNAL.search(fine), fine


# --- Translated: the sidebar, the titles, the previous / next links, the spacing ---


@pytest.mark.parametrize("lang", LANGUAGES[1:])
def test_the_frame_of_each_page_is_translated(built, lang):
    for name in PAGES:
        text = page(built, lang, name)
        sidebar = text[text.index('class="sphinxsidebar"'):]
        tagline = re.search(r'<p class="blurb">([^<]+)</p>', sidebar).group(1)
        assert SCRIPT[lang].search(tagline), f"{lang} {name}: the tagline {tagline!r}"
        for english in ["Previous page", "Next page", ">API reference<", ">Benchmarks<",
                        ">Experiments<", ">Kernel notes"]:
            assert english not in text, f"{lang} {name}: {english}"
        assert SCRIPT[lang].search(sidebar)
        # The pages in English only say so, in the reader's language; the others do not.
        notice = re.search(r'<p class="english-only">([^<]+)</p>', text)
        if name in ("index", "annotated/reference"):
            assert notice is None, name
        else:
            assert notice and SCRIPT[lang].search(notice.group(1)), f"{lang} {name}: no notice"
            title = re.search(r"<title>([^<]+)</title>", text).group(1)
            assert SCRIPT[lang].search(title.split("&#8212;")[0]), f"{lang} {name}: title {title}"


def test_english_pages_have_english_frame(built):
    for name in PAGES:
        text = page(built, "en", name)
        assert '<p class="blurb">Layer Normalization for PyTorch</p>' in text
        assert 'class="english-only"' not in text
    assert "Next page:" in page(built, "en", "index")


@pytest.mark.parametrize("lang", ["zh_CN", "ja"])
def test_no_spaces_around_inline_markup_in_chinese_and_japanese(built, lang):
    inline = r'(?:<code\b|<span class="math|<a class="reference|<strong>|<em>)'
    closing = r"(?:</code>|</span>|</a>|</strong>|</em>)"
    for name in ["index", "annotated/reference"]:
        text = page(built, lang, name)
        before = re.findall(f"[{CJK}] {inline}.{{0,40}}", text)
        after = re.findall(f".{{0,40}}{closing} [{CJK}]", text)
        assert not before and not after, f"{lang} {name}: {(before + after)[:3]}"


def test_readme_layout_names_every_module_and_folder_of_the_package():
    """The README's layout is the map of the package: every module and subpackage is on it, in
    the folder it lives in, and it names nothing that is not there."""
    import re

    block = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```", 2)[1]
    listed, folders = set(), []  # folders: (indent, name) of the folders the line is inside
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]  # the names, then two spaces, then what they are
        tokens = [t for t in re.split(r",\s*", names) if re.fullmatch(r"[a-z_]+(\.py|/)", t)]
        if not tokens:
            continue  # a description carried over from the line above
        folders = [(i, f) for i, f in folders if i < indent]
        for token in tokens:
            listed.add("/".join([f for _, f in folders] + [token.rstrip("/")]))
        if tokens[-1].endswith("/"):
            folders.append((indent, tokens[-1].rstrip("/")))
    package = ROOT / "layernorm"
    on_disk = {str(p.relative_to(ROOT)) for p in package.rglob("*.py")
               if p.name == "__init__.py" or not p.name.startswith("_")}
    on_disk |= {str(p.relative_to(ROOT)) for p in package.rglob("*") if p.is_dir() and not p.name.startswith("_")}
    # a folder's own modules may be summed up by the folder (experiments/: one module per claim)
    summed_up = {"layernorm/experiments"}
    missing = sorted(m for m in on_disk if m not in listed and not any(m.startswith(f + "/") for f in summed_up)
                     and not (m.endswith("/__init__.py") and m.rsplit("/", 1)[0] in listed))
    assert not missing, f"the README's layout does not name: {missing}"
    absent = sorted(p for p in listed if p.startswith("layernorm") and not (ROOT / p).exists())
    assert not absent, f"the README's layout names what is not in the package: {absent}"
