"""Sphinx configuration of the ae_nb documentation.

`python docs/build.py` executes and processes the notebooks into docs/_build/src and runs Sphinx with this file;
see docs/README.md.
"""
import inspect, os, re, sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))          # docs_helpers
sys.path.insert(0, str(ROOT))          # the package, also when it is not installed

from docs_helpers import docments_fields, read_settings, rst_directive, vendored_widget_js

settings = read_settings(ROOT/'settings.ini')
project = settings['lib_name']
author = settings['author']
copyright = settings['copyright']
release = version = settings['version']

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.viewcode']
root_doc = 'index'
exclude_patterns = ['**.ipynb_checkpoints']

# Notebooks arrive executed (by build.py, with a real kernel, widget state included): never run them here.
nb_execution_mode = 'off'
nb_merge_streams = True
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3

# The widget manager is served from the site itself (vendored at build time from the npm registry), never a CDN.
nb_ipywidgets_js = vendored_widget_js(DOCS/'_build'/'vendor')
html_static_path = [str(DOCS/'_static')] + ([str(DOCS/'_build'/'vendor')] if nb_ipywidgets_js else [])
html_css_files = ['widgets.css']

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'documented_params'
autodoc_preserve_defaults = True
autodoc_class_signature = 'mixed'
default_role = 'py:obj'               # `name` in a docstring links to the API entry of that name when there is one

html_theme = 'furo'
html_title = f"{project} {release}"
html_show_sourcelink = False


def _docments_hook(app, what, name, obj, options, lines):
    "Docstrings are one line of Markdown-flavoured text; add fastcore docments comments as parameter docs."
    if what not in ('function', 'method', 'class'): return
    extra = docments_fields(obj)
    if extra: lines.extend([''] + extra)


def _no_type_docstring(app, what, name, obj, options, lines):
    "A constant (a dict, a tuple) has no docstring of its own: do not show its type's."
    if what in ('data', 'attribute') and lines and inspect.cleandoc('\n'.join(lines)) == inspect.getdoc(type(obj)): lines.clear()


def _markdown_safe(app, what, name, obj, options, lines):
    "Escape reST markup characters outside `code` spans, so Markdown-style docstrings never break the build."
    from docs_helpers import escape_rst
    lines[:] = [escape_rst(l) if not l.startswith(':') else l for l in lines]


def setup(app):
    app.add_directive('rst', rst_directive())
    app.connect('autodoc-process-docstring', _no_type_docstring, priority=300)
    app.connect('autodoc-process-docstring', _markdown_safe, priority=400)
    app.connect('autodoc-process-docstring', _docments_hook, priority=600)
