"""Sphinx configuration: the Markdown pages of this directory (MyST) and the API reference.

Build with ``sphinx-build -W docs docs/_build/html`` (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from wfl_async import __version__  # noqa: E402

project = "wfl_async"
author = "wfl_async developers"
copyright = "wfl_async developers, GPL-2.0"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_click",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.md", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# the API pages document what users call; names in signatures that Sphinx cannot resolve to a page
# (third-party types, private aliases) are not errors
nitpicky = False
suppress_warnings = ["myst.xref_missing"]

html_theme = "sphinx_book_theme"  # as wfl's own documentation
html_title = f"wfl_async {version}"
html_theme_options = {"repository_url": "https://github.com/libAtoms/workflow", "use_repository_button": False}
