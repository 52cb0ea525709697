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
html_css_files = ['widgets.css', 'site.css']

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'documented_params'
autodoc_preserve_defaults = True
autodoc_class_signature = 'mixed'
default_role = 'py:obj'               # `name` in a docstring links to the API entry of that name when there is one

html_theme = 'furo'
html_title = f"{project} {release}"
html_show_sourcelink = False
NBS = settings.get('nbs_path', 'nbs')
_GITHUB_ICON = ('<svg stroke="currentColor" fill="currentColor" stroke-width="0" viewBox="0 0 16 16"><path fill-rule="evenodd" '
                'd="M8 0C3.58 0 0 3.58 0 8c0 3.54 2.29 6.53 5.47 7.59.4.07.55-.17.55-.38 0-.19-.01-.82-.01-1.49-2.01.37-2.53-.49'
                '-2.69-.94-.09-.23-.48-.94-.82-1.13-.28-.15-.68-.52-.01-.53.63-.01 1.08.58 1.23.82.72 1.21 1.87.87 2.33.66.07-.52'
                '.28-.87.51-1.07-1.78-.2-3.64-.89-3.64-3.95 0-.87.31-1.59.82-2.15-.08-.2-.36-1.02.08-2.12 0 0 .67-.21 2.2.82.64'
                '-.18 1.32-.27 2-.27.68 0 1.36.09 2 .27 1.53-1.04 2.2-.82 2.2-.82.44 1.1.16 1.92.08 2.12.51.56.82 1.27.82 2.15 0 '
                '3.07-1.87 3.75-3.65 3.95.29.25.54.73.54 1.48 0 1.07-.01 1.93-.01 2.2 0 .21.15.46.55.38A8.013 8.013 0 0016 8c0'
                '-4.42-3.58-8-8-8z"></path></svg>')
html_theme_options = {
    # the eye at the top of a page opens its notebook in the repository (not the JSON: no ?plain=true)
    'source_view_link': f"{settings['git_url']}/blob/{settings.get('branch', 'main')}/{NBS}/{{filename}}",
    'top_of_page_buttons': ['view'],
    'footer_icons': [{'name': 'GitHub', 'url': settings['git_url'], 'html': _GITHUB_ICON, 'class': ''}],
}


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


def _no_source_button(app, pagename, templatename, context, doctree):
    "Pages that build.py writes (the API and CLI references) have no notebook to open: no button for one."
    if not (ROOT/NBS/f"{pagename}{context.get('page_source_suffix') or ''}").is_file(): context['page_source_suffix'] = None


def _patched_source(app, modname):
    """Source and tags for viewcode, with the methods that fastcore's `@patch` adds to classes.

    viewcode links an entry to its source when the module's parsed tags hold the entry's qualified name; a method
    written as `@patch def save(self:ConfigEditor)` sits at module level, so the tags know it as `save`, and
    `ConfigEditor.save` (its `__qualname__`) finds nothing. Its lines come from `inspect.getsourcelines`.
    """
    from sphinx.pycode import ModuleAnalyzer
    try:
        analyzer = ModuleAnalyzer.for_module(modname)
        analyzer.find_tags()
        module = sys.modules.get(modname) or __import__(modname, fromlist=['_'])
    except Exception: return None
    tags = dict(analyzer.tags)
    for cls in {v for v in vars(module).values() if inspect.isclass(v)}:
        for name, raw in vars(cls).items():
            func = getattr(raw, 'fget', None) or getattr(raw, '__func__', None) or raw
            if not inspect.isfunction(func) or func.__module__ != modname: continue
            qualname = f"{cls.__qualname__}.{name}"
            if qualname in tags or func.__qualname__ != qualname: continue
            try: lines, start = inspect.getsourcelines(func)
            except (OSError, TypeError): continue
            tags[qualname] = ('def', start, start + len(lines) - 1)
    return analyzer.code, tags


def _property_module(app, modname, attribute):
    "The module that defines a property (viewcode asks the property object itself for `__module__`: it has none)."
    try:
        owner = __import__(modname, fromlist=['_'])
        *path, last = attribute.split('.')
        for name in path: owner = getattr(owner, name)
        raw = inspect.getattr_static(owner, last)
    except (ImportError, AttributeError): return None
    return getattr(raw.fget, '__module__', None) if isinstance(raw, property) and raw.fget else None


def _factory_defaults(app, what, name, obj, options, signature, return_annotation):
    "`field=<factory>` in a pydantic model's or dataclass's signature: the default it makes, when short, else no default."
    if what != 'class' or not signature or '<factory>' not in signature: return None
    fields = getattr(obj, 'model_fields', None) or getattr(obj, '__dataclass_fields__', {})
    def default(m):                    # m: the name, its annotation (if shown), ' = ' or '='
        name, annotation, equals = m[1], m[2] or '', m[3]
        factory = getattr(fields.get(name), 'default_factory', None)
        if not callable(factory): return name + annotation
        if inspect.isclass(factory) and factory.__module__.startswith(project): text = f"{factory.__name__}()"
        else: text = repr(factory())
        return f"{name}{annotation}{equals}{text}" if len(text) <= 30 else name + annotation
    return re.sub(r'(\w+)(: [^=]+?)?( = |=)<factory>', default, signature), return_annotation


def setup(app):
    app.add_directive('rst', rst_directive())
    app.connect('html-page-context', _no_source_button)
    app.connect('viewcode-find-source', _patched_source)
    app.connect('viewcode-follow-imported', _property_module)
    app.connect('autodoc-process-signature', _factory_defaults)
    app.connect('autodoc-process-docstring', _no_type_docstring, priority=300)
    app.connect('autodoc-process-docstring', _markdown_safe, priority=400)
    app.connect('autodoc-process-docstring', _docments_hook, priority=600)
