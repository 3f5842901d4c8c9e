"""Keep the translation catalogs of the docs in step with their English text.

The English text of the annotated page comes from the docstrings and comments
of ``layernorm/reference.py``; when they change, the msgids change. This script:

``update``  builds the message templates (``sphinx-build -b gettext``) and merges
            them into ``docs/locale/<lang>/LC_MESSAGES/<page>.po``: translations
            of unchanged messages are kept, changed ones are marked fuzzy with
            the old translation as a start, new ones are added empty.
``check``   the same templates, compared with the catalogs: lists every message
            without a translation (or a fuzzy one) and exits 1 if there is any.

    python docs/_ext/i18n_catalogs.py update
    python docs/_ext/i18n_catalogs.py check

What is translated:

* the pages in ``TRANSLATED``, every message of them;
* of the pages in ``TITLES_ONLY`` (the API reference and the measurements,
  English in every language), the title alone, which the sidebar and the
  previous / next links show on every page; such a page says at its top, in
  the reader's language, that it is in English only;
* the text of the HTML templates (``docs/_templates/*.html``: the sidebar's
  tagline, "Previous page", ...): every ``_('...')`` in them is a message of
  ``sphinx.po``, the catalog Sphinx reads for its templates (what a template
  uses and this catalog lacks falls back to Sphinx's own translations).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

DOCS = Path(__file__).resolve().parents[1]
LANGUAGES = ["zh_CN", "ja", "si"]
TRANSLATED = ["index", "annotated/reference"]
TITLES_ONLY = ["api", "benchmarks", "kernels-notes", "experiments"]
TEMPLATES_CATALOG = "sphinx"  # Sphinx's own name for the templates' catalog

# _('text') or _("text") in a Jinja template.
_TEMPLATE_MESSAGE = re.compile(r"""\b_\(\s*(['"])((?:(?!\1).)+)\1\s*\)""")


def template_messages() -> List[str]:
    """The messages of the HTML templates, in order of appearance."""
    found: List[str] = []
    for path in sorted((DOCS / "_templates").glob("*.html")):
        for match in _TEMPLATE_MESSAGE.finditer(path.read_text(encoding="utf-8")):
            if match.group(2) not in found:
                found.append(match.group(2))
    return found


def build_templates(out: Path) -> Dict[str, "Catalog"]:
    """Run the gettext builder; return {catalog name: template catalog}."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po

    subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "gettext", "-q", "-E",
         "-d", str(out / "doctrees"), str(DOCS), str(out / "pot")],
        check=True,
    )
    templates = {}
    for page in TRANSLATED:
        with open(out / "pot" / f"{page}.pot", "rb") as f:
            templates[page] = read_po(f)
    for page in TITLES_ONLY:
        path = out / "pot" / f"{page}.pot"
        if not path.exists():
            continue  # a measurement page not written yet
        with open(path, "rb") as f:
            full = read_po(f)
        title = next(m for m in full if m.id)  # the page's first message is its title
        template = Catalog(project="layernorm", version=full.version, fuzzy=False)
        template.add(title.id, context=title.context)
        templates[page] = template
    sphinx_template = Catalog(project="layernorm", fuzzy=False)
    for text in template_messages():
        sphinx_template.add(text)
    templates[TEMPLATES_CATALOG] = sphinx_template
    return templates


def po_path(lang: str, page: str) -> Path:
    return DOCS / "locale" / lang / "LC_MESSAGES" / f"{page}.po"


def _messages(catalog):
    return [(m.id, m.string, sorted(m.flags), m.previous_id) for m in catalog if m.id]


def update(templates) -> None:
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po, write_po

    for lang in LANGUAGES:
        for page, template in templates.items():
            path = po_path(lang, page)
            before = None
            if path.exists():
                with open(path, "rb") as f:
                    catalog = read_po(f, locale=lang)
                before = _messages(catalog)
            else:
                catalog = Catalog(locale=lang, project="layernorm", fuzzy=False)
            catalog.update(template, no_fuzzy_matching=False)
            catalog.project, catalog.version = "layernorm", template.version
            catalog.copyright_holder, catalog.msgid_bugs_address = "the layernorm authors", ""
            catalog.last_translator, catalog.language_team = "layernorm docs", lang
            catalog.fuzzy = False
            catalog.obsolete.clear()  # git keeps the history of old messages
            if before == _messages(catalog):
                continue  # nothing but the dates would change
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                write_po(f, catalog, width=0, omit_header=False, sort_output=False,
                         include_previous=True)
            print(f"updated {path.relative_to(DOCS)}")


def missing(templates) -> List[str]:
    """One line per message of a template that some language lacks."""
    from babel.messages.pofile import read_po

    problems = []
    for lang in LANGUAGES:
        for page, template in templates.items():
            path = po_path(lang, page)
            if not path.exists():
                problems.append(f"{lang}: no catalog {path.relative_to(DOCS)}")
                continue
            with open(path, "rb") as f:
                catalog = read_po(f, locale=lang)
            for message in template:
                if not message.id:
                    continue
                found = catalog.get(message.id)
                if found is None or not found.string:
                    problems.append(f"{lang} {page}: untranslated: {message.id[:70]!r}")
                elif found.fuzzy:
                    problems.append(f"{lang} {page}: fuzzy: {message.id[:70]!r}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["update", "check"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        templates = build_templates(Path(tmp))
    if args.command == "update":
        update(templates)
        return 0
    problems = missing(templates)
    for line in problems:
        print(line)
    print(f"{len(problems)} messages need a translation" if problems else "every message is translated")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
