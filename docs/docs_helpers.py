"Small helpers shared by docs/conf.py and docs/build.py."
import configparser, inspect, re
from pathlib import Path

_CODE = re.compile(r'(`[^`]*`)')


def read_settings(path:Path)->dict:
    "The `[DEFAULT]` section of nbdev's settings.ini, interpolated."
    parser = configparser.ConfigParser()
    parser.read(path, encoding='utf-8')
    return dict(parser['DEFAULT'])


_BEFORE_OK = re.compile(r'(^|[\s\'"(\[{<:/-])$')           # what reST lets stand before inline markup
_AFTER_OK = re.compile(r'^($|[\s\'")\]}>.,:;!?/\\-])')        # ... and after it


def escape_rst(text:str)->str:
    """Escape reST markup characters (`*`, `_`, `|`, `\\`) outside backtick code spans, and make every Markdown code
    span valid reST: no blank at its edges, an escaped space where it touches a word (`` `--override`s ``)."""
    parts, out = _CODE.split(text), []
    for i, part in enumerate(parts):
        if i % 2 == 0: out.append(re.sub(r'([\\*_|])', r'\\\1', part)); continue
        inner = part[1:-1].strip()
        if not inner: out.append(part.replace('`', '\\`')); continue
        before, after = (out[-1] if out else ''), (parts[i + 1] if i + 1 < len(parts) else '')
        out.append(('' if _BEFORE_OK.search(before) else '\\ ') + f"`{inner}`" + ('' if _AFTER_OK.match(after) else '\\ '))
    return ''.join(out)


def docments_fields(obj)->list[str]:
    "reST `:param:`/`:returns:` lines from fastcore docments comments (or pydantic field descriptions)."
    fields = getattr(obj, 'model_fields', None)
    if inspect.isclass(obj) and isinstance(fields, dict):
        return [f":param {n}: {escape_rst(f.description)}" for n, f in fields.items() if f.description]
    from fastcore.docments import docments
    try: docs = docments(obj, full=False)
    except Exception: return []
    lines = [f":param {n}: {escape_rst(d)}" for n, d in docs.items() if d and n not in ('self', 'return')]
    if docs.get('return') and not inspect.isclass(obj): lines.append(f":returns: {escape_rst(docs['return'])}")
    return lines


WIDGET_JS = ('require.js', 'embed-amd.js')


def vendored_widget_js(vendor:Path)->dict:
    "myst-nb's `nb_ipywidgets_js` for the vendored widget manager, or {} (no widget JavaScript, no CDN) without it."
    if not all((vendor/name).is_file() for name in WIDGET_JS): return {}
    return {name: {} for name in WIDGET_JS}


def rst_directive():
    """A MyST directive, `{rst}`, that parses its content as reST, like `{eval-rst}`.

    `{eval-rst}` pads the text with one blank line per line of the notebook before it so that warnings point at
    the right line; in a notebook page myst-nb numbers cell *i* from line 10,000 * (i + 1), so every API entry
    would make docutils walk hundreds of thousands of blank lines (minutes for a chapter). Here the content is
    parsed as it is; a warning names the page and the entry instead of a line.
    """
    from docutils.utils import new_document
    from myst_parser.mocking import MockRSTParser
    from sphinx.util.docutils import SphinxDirective

    class RstDirective(SphinxDirective):
        has_content = True
        def run(self):
            doc = new_document(self.state.document['source'], self.state.document.settings)
            doc.reporter = self.state.document.reporter
            MockRSTParser().parse('\n'.join(self.content), doc)
            for node in doc:
                if node['names']: self.state.document.note_explicit_target(node, node)
            return list(doc.children)
    return RstDirective


def source_stamp(root:Path)->str:
    "A hash of the notebooks and package sources a site is built from (to tell a stale site from a fresh one)."
    import hashlib
    settings = read_settings(root/'settings.ini')
    files = sorted((root/settings.get('nbs_path', 'nbs')).rglob('*.ipynb')) + sorted((root/settings['lib_name']).glob('*.py'))
    h = hashlib.sha256()
    for p in files:
        if p.name != '_modidx.py' and '.ipynb_checkpoints' not in p.parts: h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()[:16]
