"""Sphinx directive ``optional-toctree``: a toctree that lists only the entries
whose documents exist.

Other people write some of the pages (``benchmarks.md``, ``experiments.md``);
until they do, the docs must still build with ``-W``. A plain toctree warns
about a missing document; this one leaves it out quietly (and says so in the
build log at the info level).
"""

from __future__ import annotations

from docutils.statemachine import StringList
from sphinx.directives.other import TocTree
from sphinx.util import logging

logger = logging.getLogger(__name__)


class OptionalTocTree(TocTree):
    def run(self):
        kept = StringList()
        for offset, entry in enumerate(self.content):
            name = entry.strip()
            target = name.rsplit("<", 1)[-1].rstrip(">").strip() if name.endswith(">") else name
            if not name or target in self.env.found_docs:
                kept.append(entry, *self.content.info(offset))
            else:
                logger.info("optional-toctree: %s is not written yet, left out", target)
        self.content = kept
        return super().run()


def setup(app):
    app.add_directive("optional-toctree", OptionalTocTree)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
