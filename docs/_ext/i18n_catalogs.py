"""Keep the translation catalogs of the docs in step with their English text.

The English text of the annotated page comes from the docstrings of
``layernorm/reference.py``; when they change, the msgids change. This script:

``update``  builds the message templates (``sphinx-build -b gettext``) and merges
            them into ``docs/locale/<lang>/LC_MESSAGES/<page>.po``: translations
            of unchanged messages are kept, changed ones are marked fuzzy with
            the old translation as a start, new ones are added empty.
``check``   the same templates, compared with the catalogs: lists every message
            without a translation (or a fuzzy one) and exits 1 if there is any.

    python docs/_ext/i18n_catalogs.py update
    python docs/_ext/i18n_catalogs.py check

Only the pages in ``TRANSLATED`` are translated; the API reference and the
measurement pages stay in English in every language.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

DOCS = Path(__file__).resolve().parents[1]
LANGUAGES = ["zh_CN", "ja", "si"]
TRANSLATED = ["index", "annotated/reference"]


def build_templates(out: Path) -> Dict[str, Catalog]:
    """Run the gettext builder; return {page: template catalog}."""
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "gettext", "-q", "-E",
         "-d", str(out / "doctrees"), str(DOCS), str(out / "pot")],
        check=True,
    )
    templates = {}
    for page in TRANSLATED:
        with open(out / "pot" / f"{page}.pot", "rb") as f:
            templates[page] = read_po(f)
    return templates


def po_path(lang: str, page: str) -> Path:
    return DOCS / "locale" / lang / "LC_MESSAGES" / f"{page}.po"


def _messages(catalog: Catalog):
    return [(m.id, m.string, sorted(m.flags), m.previous_id) for m in catalog if m.id]


def update(templates: Dict[str, Catalog]) -> None:
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


def missing(templates: Dict[str, Catalog]) -> List[str]:
    """One line per message of a template that some language lacks."""
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
