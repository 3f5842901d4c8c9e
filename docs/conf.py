"""Sphinx configuration of the layernorm docs.

Build everything (English and the translations) with ``scripts/build_docs.sh``;
docs/README.md says how it works.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))  # document the checkout, not some installed copy

project = "layernorm"
author = "the layernorm authors"
copyright = "2026, the layernorm authors"

import layernorm  # noqa: E402

release = layernorm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "annotated_source",
    "cross_links",
    "optional_toctree",
    "package_api",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Only these pages are built (docs/README.md, for instance, is not a page). The
# Markdown pages are written with the kernels and the experiments; the front
# page lists those that exist.
include_patterns = ["index.rst", "api.rst", "annotated/*.rst",
                    "benchmarks.md", "kernels-notes.md", "experiments.md"]
exclude_patterns = ["_build", "locale"]
templates_path = ["_templates"]
html_static_path = ["_static"]

# --- Translations: gettext catalogs under docs/locale/<lang>/LC_MESSAGES/ ---
# ``sphinx-build -D language=ja`` picks the catalogs; Sphinx compiles each .po to
# a .mo next to it at build time (gettext_auto_build), ignored by git.
language = "en"
locale_dirs = ["locale/"]
gettext_compact = False  # one catalog per page: annotated/reference.po, index.po
gettext_uuid = False
gettext_location = False  # msgids are what matters; line numbers only churn the diff
# The pages in English in every language; only their titles are translated (for
# the sidebar and the previous / next links), and they say so at the top.
# docs/_ext/i18n_catalogs.py keeps this list.
from i18n_catalogs import TITLES_ONLY  # noqa: E402

# --- autodoc ---
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# A member without a docstring of its own shows the one it overrides, except
# torch.nn.Module's generic ones (see _skip_generic_module_docs below).
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# The kernels need Triton at import time; a docs build on a machine without it
# still documents them (the decorators of a mocked module pass functions through).
try:
    importlib.import_module("triton")
    autodoc_mock_imports = []
except Exception:  # not installed, or installed without what it needs
    autodoc_mock_imports = ["triton"]

# --- MyST (benchmarks.md, experiments.md) ---
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# The Markdown pages are also read on GitHub, where they may start at ##. Every
# link of theirs must resolve (a page, a heading's anchor, a label, or a public
# address): a link to a file outside docs/ would show as mere text here, so it
# fails the build instead.
suppress_warnings = ["myst.header"]

# --- Math ---
# Rendered in the browser by MathJax 3. The pages carry their own copy
# (tex-chtml.js and its fonts, about 1.6 MB in _static/mathjax/), so they need
# no network, when one is found:
# - LAYERNORM_MATHJAX_DIR: a MathJax 3 es5/ folder (``npm pack mathjax@3``, unpacked:
#   package/es5), or ``cdn`` to load MathJax from its CDN instead;
# - else the pip package django-static-mathjax (in the docs extra: MathJax 3's
#   files, no Django needed);
# - else MathJax from its CDN (Sphinx's default).


def _find_mathjax():
    chosen = os.environ.get("LAYERNORM_MATHJAX_DIR", "")
    if chosen == "cdn":
        return None
    if chosen:
        folder = Path(chosen).resolve()
        if not (folder / "tex-chtml.js").is_file():
            raise RuntimeError(f"LAYERNORM_MATHJAX_DIR={chosen} has no tex-chtml.js")
        return folder
    spec = importlib.util.find_spec("mathjax")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "static" / "mathjax" / "es5"
        if (folder / "tex-chtml.js").is_file():
            return folder
    return None


_local_mathjax = _find_mathjax()
if _local_mathjax:
    mathjax_path = "mathjax/tex-chtml.js"


def _copy_local_mathjax(app, exception):
    if exception is None and _local_mathjax and app.builder.format == "html":
        import shutil

        target = Path(app.outdir) / "_static" / "mathjax"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_local_mathjax / "tex-chtml.js", target / "tex-chtml.js")
        fonts = Path("output") / "chtml" / "fonts" / "woff-v2"
        shutil.copytree(_local_mathjax / fonts, target / fonts, dirs_exist_ok=True)


def _short_reference_docstring(app, what, name, obj, options, lines):
    """The API page shows the first paragraph of reference.py's module docstring
    and links to the annotated page, which renders the whole of it beside the code."""
    if what == "module" and name == "layernorm.reference":
        first = lines.index("") if "" in lines else len(lines)
        lines[first:] = ["", "The math, the derivation of the backward pass and the code, side by side:",
                         ":doc:`/annotated/reference`.", ""]


def _skip_generic_module_docs(app, what, name, obj, skip, options):
    """Leave out what would be documented by torch.nn.Module's generic text.

    A ``forward`` without a docstring of its own would show Module.forward's
    "Should be overridden by all subclasses", a class without one Module's
    "Base class for all neural network modules". An override of a more
    specific PyTorch class (TransformerEncoderLayer.forward) keeps its text.
    """
    if skip or getattr(obj, "__doc__", None) is not None:
        return None
    import torch

    if isinstance(obj, type):
        return True if issubclass(obj, torch.nn.Module) else None
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    owner = module
    for part in getattr(obj, "__qualname__", "").split(".")[:-1]:
        owner = getattr(owner, part, None)
    if not isinstance(owner, type):
        return None
    for base in owner.__mro__[1:]:
        inherited = base.__dict__.get(name)
        if getattr(inherited, "__doc__", None):
            return True if base is torch.nn.Module else None
    return None


def setup(app):
    app.connect("build-finished", _copy_local_mathjax)
    app.connect("autodoc-process-docstring", _short_reference_docstring)
    app.connect("autodoc-skip-member", _skip_generic_module_docs)


# --- HTML ---
html_theme = "alabaster"
html_title = "layernorm"
# The sidebar's tagline and the previous / next links come from docs/_templates
# (about.html, layout.html), whose text is translated by
# docs/locale/<lang>/LC_MESSAGES/sphinx.po.
html_theme_options = {
    "page_width": "min(96vw, 1480px)",
    "sidebar_width": "230px",
    "fixed_sidebar": False,
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "languages.html", "navigation.html", "searchbox.html"]}
html_context = {
    "doc_languages": [("en", "English"), ("zh_CN", "中文"), ("ja", "日本語"), ("si", "සිංහල")],
    "english_only_pages": TITLES_ONLY,
}
html_css_files = ["docs.css"]
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
