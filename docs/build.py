#!/usr/bin/env python
"""Build the ae_nb documentation site offline with Sphinx, myst-nb and furo.

    python docs/build.py          # or: make -C docs html; the site is docs/_build/html/index.html

1. Execute every notebook under nbs/ with a real Jupyter kernel, in its own folder (as `nbdev_test` does),
   skipping the cells `nbdev_test` skips (`tst_flags` such as slow/cuda, `eval: false`, the export cell), so
   the pages show real outputs and the saved widget state. Executed notebooks are cached under
   docs/_build/executed, keyed by the notebook and the package sources.
2. Process them with nbdev's own processors (hidden and exported cells removed, `show_doc` cells added after
   every exported definition), then turn each `show_doc` into a Sphinx autodoc entry, nbdev cell options
   into myst-nb tags, backticked public names in prose (not in headings) into links, and links to the
   published site into links within this one. Under each page's title, a line names its notebook in the
   repository. Widget outputs are snapshots of their saved state: each gets a note above it saying so and
   linking the notebook to run; those that would show nothing (a closed progress bar, hidden but taking
   room) or an example's failure (tqdm's red bar) are dropped.
3. Write an API page that lists every name in every module's `__all__` (with an entry for any name that no
   chapter documents), a command-line reference generated from the argument parsers of the console scripts
   in settings.ini (so it says what `--help` says), and a table of contents on the home page
   (nbs/index.ipynb): chapters, tutorials, then the reference pages (CLI, troubleshooting, ..., API).
4. Vendor the Jupyter widget manager (`@jupyter-widgets/html-manager`, `requirejs`) from the npm registry
   into docs/_build/vendor once, so pages render widgets from saved state without a CDN.
5. Run Sphinx with `-W --keep-going`: any warning fails the build.
"""
from __future__ import annotations
import argparse, functools, hashlib, importlib, inspect, json, os, re, shutil, subprocess, sys, tarfile, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
BUILD = DOCS/'_build'
SRC, HTML, EXECUTED, VENDOR = BUILD/'src', BUILD/'html', BUILD/'executed', BUILD/'vendor'
sys.path[:0] = [str(DOCS), str(ROOT)]     # helpers, and the package of this tree
from docs_helpers import WIDGET_JS, read_settings, source_stamp

SETTINGS = read_settings(ROOT/'settings.ini')
LIB, NBS = SETTINGS['lib_name'], ROOT/SETTINGS.get('nbs_path', 'nbs')
DOC_URL = SETTINGS.get('doc_host', '').rstrip('/') + SETTINGS.get('doc_baseurl', '')   # where the site is published
GENERATED_PAGES = {'api', 'cli'}                 # pages build.py writes (no notebook behind them)
SKIP_FLAGS = set(re.split(r'[|\s]+', SETTINGS.get('tst_flags', ''))) - {''}   # nbdev splits on spaces
# npm package -> the files of its tarball to serve (the widget manager with the icon fonts its CSS refers to)
NPM_PACKAGES = {'@jupyter-widgets/html-manager@^1.0.6': r'package/dist/(embed-amd\.js|[0-9a-f]+\.(eot|svg|ttf|woff2?))',
                'requirejs@^2.3.6': r'package/require\.js'}


# ---- 1. execution -------------------------------------------------------------------------------------------
_DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)(:?)\s*(.*?)\s*$')

def directives(source:str)->dict:
    "nbdev `#| name args` comments at the top of a cell, as {name(+':' for cell options): args}."
    found = {}
    for line in source.splitlines():
        if not line.strip(): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        found[m[1] + m[2]] = m[3]
    return found

def skipped_by_tests(source:str)->bool:
    "Whether `nbdev_test` would skip this cell (a test flag, `eval: false`, or the `nbdev_export()` cell)."
    d = directives(source)
    return bool(SKIP_FLAGS & set(d)) or d.get('eval:', '').lower() == 'false' or 'nbdev_export()' in source

def notebook_key(path:Path)->str:
    "Cache key of an executed notebook: its text, the package sources and the settings."
    h = hashlib.sha256(path.read_bytes())
    for p in sorted((ROOT/LIB).glob('*.py')) + [ROOT/'settings.ini']:
        if p.name != '_modidx.py': h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]

def execute(path:Path)->Path:
    "Execute notebook `path` in its folder with a Jupyter kernel (widget state saved); return the cached result."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    out = EXECUTED/f"{path.relative_to(NBS).with_suffix('').as_posix().replace('/', '__')}-{notebook_key(path)}.ipynb"
    if out.exists(): return out
    nb = nbformat.read(path, as_version=4)
    skipped = [c for c in nb.cells if c.cell_type == 'code' and skipped_by_tests(c.source)]
    for c in skipped: c.cell_type = 'raw'; c.pop('outputs', None); c.pop('execution_count', None)
    try: NotebookClient(nb, timeout=900, kernel_name='python3', extra_arguments=['--log-level=ERROR', '--matplotlib=inline'], resources={'metadata': {'path': str(path.parent)}}).execute()
    except CellExecutionError as e:
        message = re.sub(r'\x1b\[[0-9;]*m', '', str(e))
        raise RuntimeError(f"{path.relative_to(ROOT)}: a cell failed while building the docs:\n{message[-3000:]}") from None
    for c in skipped: c.cell_type, c.outputs, c.execution_count = 'code', [], None
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(out.name.rpartition('-')[0] + '-*.ipynb'): old.unlink()
    tmp = out.with_suffix('.tmp')
    nbformat.write(nb, tmp)
    os.replace(tmp, out)
    return out


# ---- 2. processing ------------------------------------------------------------------------------------------
def public_names()->list[str]:
    "The full dotted name of every name in the `__all__` of every module of the package."
    import pkgutil
    package = importlib.import_module(LIB)
    return [f"{LIB}.{info.name}.{name}" for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith('_')
            for name in getattr(importlib.import_module(f"{LIB}.{info.name}"), '__all__', [])]

def autodoc_directive(full:str)->str:
    "The autodoc directive (`autoclass`, `autofunction`, ...) that documents the object named `full`."
    parts = full.split('.')
    for i in range(len(parts) - 1, 0, -1):
        try: obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError: continue
        owner = None
        for attr in parts[i:]: owner, obj = obj, getattr(obj, attr)
        if inspect.isclass(owner) and len(parts) - i > 1:
            raw = inspect.getattr_static(owner, parts[-1])
            return 'autoproperty' if isinstance(raw, property) else 'autoattribute' if not callable(obj) else 'automethod'
        if inspect.isclass(obj): return 'autoclass'
        return 'autofunction' if inspect.isroutine(obj) or isinstance(obj, functools.partial) else 'autodata'
    raise ValueError(f"cannot import {full}")

def autodoc_block(full:str)->str:
    "A MyST block with the autodoc entry of `full` (autodoc writes reST, so the entry sits in an `{rst}` block)."
    return f"```{{rst}}\n.. {autodoc_directive(full)}:: {full}\n```"

_SHOW_DOC = re.compile(r'^\s*show_doc\(\s*([\w.]+)\s*(?:,[^)]*)?\)\s*$')

class show_docs_in_order:
    "Put the `show_doc` cells that `add_show_docs` adds after one exported cell back in definition order."
    def __init__(self, nb): self.nb = nb
    def begin(self):
        cells, i = self.nb.cells, 0
        while i < len(cells):
            j = i
            while j < len(cells) and getattr(cells[j], 'has_sd', False): j += 1
            if j > i + 1: cells[i:j] = cells[i:j][::-1]
            i = max(j, i + 1)

class to_autodoc:
    "Replace each `show_doc(name)` cell with an autodoc entry for `name` (in the notebook's module, else where it is exported)."
    def __init__(self, module:str|None, documented:set, names:dict):
        self.module, self.documented, self.names = module, documented, names
    def full_name(self, name:str)->str:
        head, _, rest = name.partition('.')
        module = importlib.import_module(self.module) if self.module else None
        if head in getattr(module, '__all__', ()): return f"{self.module}.{name}"
        if head in self.names: return self.names[head] + (f".{rest}" if rest else '')
        if hasattr(module, head): return f"{self.module}.{name}"
        raise ValueError(f"show_doc({name}): {name} is neither in {self.module} nor a public name of {LIB}")
    def __call__(self, cell):
        m = _SHOW_DOC.match(cell.source) if cell.cell_type == 'code' else None
        if not m: return
        full = self.full_name(m[1])
        cell.cell_type, cell.source, cell.outputs = 'markdown', autodoc_block(full), []
        cell.pop('execution_count', None)
        self.documented.add(full)

def cell_options(cell):
    "nbdev/Quarto cell options as myst-nb tags: `echo: false` hides the code, `output: false` the output."
    d = getattr(cell, 'directives_', None) or {}
    if d.get('include:') == ['false']: del cell['source']; return
    tags = [t for k, t in (('echo:', 'remove-input'), ('output:', 'remove-output')) if d.get(k) == ['false']]
    if tags: cell.metadata['tags'] = sorted(set(cell.metadata.get('tags', [])) | set(tags))
    if cell.cell_type == 'code' and cell.source:      # nbdev leaves Quarto's `#| key: value` lines for Quarto; drop them
        lines = cell.source.splitlines()
        while lines and _DIRECTIVE.match(lines[0]): lines.pop(0)
        cell.source = '\n'.join(lines)

class link_names:
    "Turn `name` in prose into a link to its API entry when `name` is a public name of the package."
    def __init__(self, names:dict): self.names = names   # short name -> full name (the first module that exports it)
    def __call__(self, cell):
        if cell.cell_type != 'markdown': return
        parts = re.split(r'(^```.*?^```)', cell.source, flags=re.MULTILINE | re.DOTALL)
        link = lambda m: f"{{py:obj}}`{m[1]} <{self.names[m[1]]}>`" if m[1] in self.names else m[0]
        names = lambda text: re.sub(r'(?<![`\w])`([A-Za-z_][\w]*)`(?![`\w])', link, text)
        # not in headings: a heading that is a link reads as a button, in the page and in its table of contents
        prose = lambda part: ''.join(l if l.lstrip().startswith('#') else names(l) for l in part.splitlines(keepends=True))
        cell.source = ''.join(p if p.startswith('```') else prose(p) for p in parts)

_LOCAL_FILE = re.compile(r'!\[[^\]]*\]\(<?([^)\s>]+)|<img[^>]*\ssrc="([^"]+)"')

def copy_local_files(cells:list, notebook:Path, dest:Path):
    "Copy the files (images) that markdown cells of `notebook` refer to by relative path next to its processed copy."
    for cell in cells:
        if cell.cell_type != 'markdown': continue
        for m in _LOCAL_FILE.finditer(cell.source):
            ref = unquote((m[1] or m[2]).split('#')[0])
            if not ref or urlsplit(ref).scheme or ref.startswith('/'): continue
            src = (notebook.parent/ref).resolve()
            if src.is_file() and NBS in src.parents:
                target = dest.parent/ref
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)

WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'

def source_url(notebook:Path)->str:
    "Where the notebook is read in the repository (settings.ini's `git_url` and `branch`)."
    return f"{SETTINGS['git_url']}/blob/{SETTINGS.get('branch', 'main')}/{notebook.relative_to(ROOT).as_posix()}"

def widget_state(nb:dict)->dict:
    "The saved state of a notebook's widgets, by model id."
    return nb.get('metadata', {}).get('widgets', {}).get('application/vnd.jupyter.widget-state+json', {}).get('state', {})

def spent_widget(state:dict, model_id:str)->bool:
    """Whether a widget output shows a reader nothing of use: a widget that is gone, hidden (a closed progress
    bar, which would leave a blank gap), or a progress bar that stopped short (tqdm's red bar of a failing example)."""
    model = lambda ref: state.get(str(ref).removeprefix('IPY_MODEL_')) or {}
    widget = state.get(model_id)
    if not widget: return True
    layout = model(widget['state'].get('layout')).get('state', {})
    if layout.get('visibility') == 'hidden' or layout.get('display') == 'none': return True
    return any(m.get('model_name') in ('FloatProgressModel', 'IntProgressModel') and m['state'].get('bar_style') == 'danger'
               for m in map(model, widget['state'].get('children', [])))

def snapshot_note(notebook:Path)->dict:
    "The output that labels a widget on the site as a snapshot, linking the notebook that runs it."
    path = notebook.relative_to(ROOT).as_posix()
    html = ('<div class="admonition note widget-snapshot"><p>Static snapshot of a live widget, in the state the whole '
            f'notebook left it: run <a href="{source_url(notebook)}"><code>{path}</code></a> in Jupyter to use it.</p></div>')
    return {'output_type': 'display_data', 'metadata': {}, 'data': {'text/html': html}}

def widget_snapshots(nb:dict, notebook:Path):
    "Drop widget outputs that show nothing (`spent_widget`) and put a snapshot note above the others, in place."
    state = widget_state(nb)
    for cell in nb['cells']:
        if not cell.get('outputs'): continue
        keep = [o for o in cell['outputs'] if WIDGET_VIEW not in o.get('data', {})
                or not spent_widget(state, o['data'][WIDGET_VIEW].get('model_id'))]
        first = next((i for i, o in enumerate(keep) if WIDGET_VIEW in o.get('data', {})), None)
        if first is not None: keep.insert(first, snapshot_note(notebook))
        cell['outputs'] = keep

def source_link(notebook:Path)->str:
    "The line under a page's title that names the notebook it is made from."
    path = notebook.relative_to(ROOT).as_posix()
    return f":::{{container}} source-link\nThis page is the notebook [`{path}`]({source_url(notebook)}).\n:::"

class site_links:
    "Links to pages of the published site (settings.ini's `doc_host` + `doc_baseurl`) become links within this site."
    def __init__(self, page:str): self.page = page      # the page being processed, e.g. 'tutorials/01_x'
    def target(self, m)->str:
        name, fragment = m[1], m[2] or ''
        if (NBS/f"{name}.ipynb").exists(): source = f"{name}.ipynb"
        elif name in GENERATED_PAGES: source = f"{name}.md"
        else: return m[0]                                # not a page of this site: left as it is
        return '](' + os.path.relpath(source, os.path.dirname(self.page) or '.').replace(os.sep, '/') + fragment + ')'
    def __call__(self, cell):
        if cell.cell_type == 'markdown':
            cell.source = re.sub(rf'\]\({re.escape(DOC_URL)}/([\w/.-]+?)\.html(#[\w-]+)?\)', self.target, cell.source)

def default_exp(nb:dict)->str|None:
    "The module a notebook exports to (`#| default_exp`), as a dotted name."
    for cell in nb['cells']:
        if cell['cell_type'] == 'code' and (name := directives(''.join(cell['source'])).get('default_exp')):
            return f"{LIB}.{name}"
    return None

def process(notebook:Path, executed:Path, dest:Path, names:dict, documented:set):
    "Run nbdev's documentation processors (and ours) over an executed notebook and write it for myst-nb."
    from execnb.nbio import dict2nb, mk_cell, write_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import (add_show_docs, clean_magics, filter_stream_, hide_, hide_line, mv_exports,
                                  populate_language, rm_export, rm_header_dash, strip_ansi, strip_hidden_metadata)
    raw = json.loads(executed.read_text(encoding='utf-8'))
    widget_snapshots(raw, notebook)
    nb = dict2nb(raw)
    page = notebook.relative_to(NBS).with_suffix('').as_posix()
    procs = [populate_language, add_show_docs, show_docs_in_order, strip_ansi, hide_line, filter_stream_, rm_header_dash, rm_export,
             clean_magics, hide_, mv_exports, strip_hidden_metadata, cell_options,
             to_autodoc(default_exp(raw), documented, names), link_names(names), site_links(page)]
    try: NBProcessor(procs=procs, nb=nb).process()
    except Exception as e: raise RuntimeError(f"{notebook.relative_to(ROOT)}: {e}") from e
    title = next((i for i, c in enumerate(nb.cells) if c.cell_type == 'markdown' and c.source.lstrip().startswith('# ')), None)
    if page != 'index' and title is not None: nb.cells.insert(title + 1, mk_cell(source_link(notebook), 'markdown'))
    allowed = {'code': {'id', 'cell_type', 'metadata', 'source', 'outputs', 'execution_count'}}
    for cell in nb.cells:
        cell.metadata.pop('language', None)
        for key in set(cell) - allowed.get(cell.cell_type, {'id', 'cell_type', 'metadata', 'source', 'attachments'}):
            if not key.endswith('_'): del cell[key]
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dest)
    copy_local_files(nb.cells, notebook, dest)


# ---- 3. API page and table of contents ----------------------------------------------------------------------
def summary(obj)->str:
    "First line of an object's docstring for the API table; a constant's value when it has no docstring of its own."
    doc = inspect.getdoc(obj) or ''
    if not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)) and doc in ('', inspect.getdoc(type(obj))):
        value = re.sub(r' at 0x[0-9a-f]+', '', repr(obj))
        doc = f"`{value if len(value) <= 60 else value[:57] + '...'}`"
    return doc.splitlines()[0].replace('|', '\\|') if doc else ''

def api_page(names:list[str], documented:set, order:list[str]=())->str:
    "A page listing every public name by module, with entries for names that no chapter documents."
    lines = ["# API reference", "",
             "Every public name of the package, by module. Each name links to its entry in the chapter that "
             "explains it; names that no chapter documents get their entry here.", ""]
    modules = {}
    for full in names: modules.setdefault(full.rpartition('.')[0], []).append(full.rpartition('.')[2])
    chapters = [m for m in order if m in modules]
    modules = {m: modules[m] for m in chapters + sorted(set(modules) - set(chapters))}   # in chapter order
    for module, members in modules.items():
        mod = importlib.import_module(module)
        lines += [f"## {module}", "", summary(mod), "", "| name | summary |", "| --- | --- |"]
        lines += [f"| {{py:obj}}`{n} <{module}.{n}>` | {summary(getattr(mod, n))} |" for n in members]
        lines.append("")
        for n in members:
            if f"{module}.{n}" not in documented:
                lines += [autodoc_block(f"{module}.{n}"), ""]
    return '\n'.join(lines)

def add_toc(index:Path, pages:list[str], chapters:set):
    "Append a hidden table of contents to the processed home page: chapters, tutorials, then the reference pages."
    nb = json.loads(index.read_text(encoding='utf-8'))
    groups = {'Chapters': [p for p in pages if p in chapters],
              'Tutorials': [p for p in pages if p.startswith('tutorials/')],
              'Reference': ['cli'] + sorted((p for p in pages if p not in chapters and not p.startswith('tutorials/')),
                                            key=lambda p: p != 'troubleshooting') + ['api']}
    toc = [f"```{{toctree}}\n:hidden:\n:caption: {caption}\n\n" + '\n'.join(entries) + "\n```"
           for caption, entries in groups.items() if entries]
    nb['cells'].append({'cell_type': 'markdown', 'id': 'toc', 'metadata': {}, 'source': '\n\n'.join(toc)})
    index.write_text(json.dumps(nb, indent=1), encoding='utf-8')


# ---- 3b. command-line reference ------------------------------------------------------------------------------
class _ParserBuilt(BaseException):
    "Raised in place of `parse_args`: carries the parser a command built (a BaseException, so no handler eats it)."

def console_scripts()->list[tuple[str, str]]:
    "The package's commands from settings.ini, as (command, 'module:function')."
    return [tuple(item.split('=', 1)) for item in SETTINGS.get('console_scripts', '').split()]

def command_parser(target:str)->argparse.ArgumentParser:
    "The parser that console script `target` ('module:function') builds, caught where it would parse (nothing else runs)."
    import contextlib, io
    module, _, name = target.partition(':')
    entry = getattr(importlib.import_module(module), name)
    parse_args = argparse.ArgumentParser.parse_args
    def caught(self, *args, **kwargs): raise _ParserBuilt(self)
    argparse.ArgumentParser.parse_args = caught
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): entry([])
    except _ParserBuilt as e: return e.args[0]
    finally: argparse.ArgumentParser.parse_args = parse_args
    raise RuntimeError(f"{target} returned without parsing arguments: the command-line reference cannot be built")

def _md(text:str)->str:
    "Plain text (help strings) safe inside Markdown and table cells."
    return re.sub(r'([\\`*_\[\]<>|])', r'\\\1', ' '.join(text.split()))

def option_rows(parser:argparse.ArgumentParser)->list[str]:
    "A Markdown table row per option of `parser`: the option with its value, and what it does."
    formatter, rows = parser._get_formatter(), []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction): continue
        value = a.metavar or ('{' + ','.join(map(str, a.choices)) + '}' if a.choices else a.dest.upper())
        flag = ', '.join(a.option_strings) or a.dest
        form = flag if a.nargs == 0 else f"{flag} [{value}]" if a.nargs == '?' else f"{flag} {value}"
        text = formatter._expand_help(a) if a.help else ''
        notes = [n for n, on in (('required', a.required),
                                 ('repeatable', isinstance(a, argparse._AppendAction) and 'repeatable' not in text)) if on]
        if a.nargs == '?' and a.const is not None: notes.append(f"`{flag}` alone: `{a.const}`")
        if a.choices and a.metavar: notes.append('one of ' + ', '.join(f"`{c}`" for c in a.choices))
        if a.default not in (None, False, [], argparse.SUPPRESS) and a.nargs != 0 and 'default' not in text:
            notes.append(f"default: `{a.default}`")
        form = form.replace('|', '\\|')           # a pipe inside a table cell, even in code, is escaped
        rows.append(f"| `{form}` | {_md(text)}{' (' + '; '.join(notes) + ')' if notes else ''} |")
    return rows

def command_section(command:str, target:str)->str:
    "The reference of one command: what it does, its usage and a table of its options, from its parser."
    parser = command_parser(target)
    saved = os.environ.get('COLUMNS')
    os.environ['COLUMNS'] = '100'                      # argparse wraps the usage line to the terminal's width
    try: usage = parser.format_usage().strip()
    finally: os.environ.pop('COLUMNS') if saved is None else os.environ.__setitem__('COLUMNS', saved)
    module, _, name = target.partition(':')
    lines = [f"## {command}", "", _md(parser.description or ''), "", "```text", usage, "```", "",
             ":::{container} cli-options", "| option | what it does |", "| --- | --- |", *option_rows(parser), ":::", ""]
    if parser.epilog: lines += ["```text", parser.epilog, "```", ""]
    lines += [f"Entry point: {{py:obj}}`{module}.{name} <{module}.{name}>`; `{command} --help` prints the same.", ""]
    return '\n'.join(lines)

def cli_page()->str:
    "The command-line reference: every console script of settings.ini, generated from its own argument parser."
    commands = console_scripts()
    lines = ["# Command-line reference", "",
             "Every command that installing ae_nb puts on the path, with each of its options. This page is generated "
             "from the commands' own argument parsers when the site is built, so it says what `--help` says. A run's "
             "settings are not options: `ae_train` takes them from a YAML file and from `--override KEY=VALUE` "
             "(every key is documented in the [configuration chapter](00_config.ipynb)); what the messages mean is "
             "on the [troubleshooting page](troubleshooting.ipynb).", "",
             ', '.join(f"[`{c}`](#{c.replace('_', '-')})" for c, _ in commands), ""]
    lines += [command_section(c, t) for c, t in commands]
    return '\n'.join(lines)


# ---- 4. vendored widget manager -----------------------------------------------------------------------------
def vendor_widget_js()->bool:
    "Fetch the widget manager and RequireJS from the npm registry into docs/_build/vendor (once)."
    if all((VENDOR/n).is_file() for n in WIDGET_JS): return True
    if not shutil.which('npm'): print("docs: npm not found: widgets will not render in the pages"); return False
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for spec, pattern in NPM_PACKAGES.items():
            res = subprocess.run(['npm', 'pack', spec, '--pack-destination', tmp, '--silent'], capture_output=True, text=True)
            if res.returncode: print(f"docs: npm pack {spec} failed: widgets will not render\n{res.stderr[-500:]}"); return False
            with tarfile.open(Path(tmp)/res.stdout.strip().splitlines()[-1]) as tar:
                files.update({Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers()
                              if m.isfile() and re.fullmatch(pattern, m.name)})
        VENDOR.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(files.items(), key=lambda kv: kv[0] in WIDGET_JS): (VENDOR/name).write_bytes(data)
    print(f"docs: vendored {', '.join(NPM_PACKAGES)} into {VENDOR.relative_to(ROOT)}")
    return True


# ---- main ---------------------------------------------------------------------------------------------------
def notebooks()->list[Path]:
    "Notebooks to publish: everything under nbs/ except checkpoints and files starting with `_` or `.`."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def main(argv=None)->int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-j', '--jobs', type=int, default=min(2, os.cpu_count() or 1), help="notebooks executed at once")
    parser.add_argument('--no-cache', action='store_true', help="execute every notebook again")
    parser.add_argument('--no-vendor', action='store_true', help="do not fetch the widget JavaScript from npm")
    args = parser.parse_args(argv)

    # kernels import the package from this tree (not another installed copy), and never reach W&B
    os.environ['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    os.environ.update(WANDB_MODE='disabled', WANDB_SILENT='true', MPLBACKEND='module://matplotlib_inline.backend_inline',
                      PYDEVD_DISABLE_FILE_VALIDATION='1')
    if args.no_cache: shutil.rmtree(EXECUTED, ignore_errors=True)
    paths, stamp = notebooks(), source_stamp(ROOT)
    start, cached = time.perf_counter(), sum(any(EXECUTED.glob(f"*-{notebook_key(p)}.ipynb")) for p in paths)
    try:
        with ProcessPoolExecutor(max(1, args.jobs)) as pool: executed = list(pool.map(execute, paths))
    except RuntimeError as e: print(e, file=sys.stderr); return 1
    print(f"docs: {len(paths)} notebooks ready ({cached} from the cache) in {time.perf_counter() - start:.0f} s")

    shutil.rmtree(SRC, ignore_errors=True)
    names, documented, pages = public_names(), set(), []
    short = {}
    for full in names: short.setdefault(full.rpartition('.')[2], full)
    for path, done in zip(paths, executed):
        page = path.relative_to(NBS).with_suffix('').as_posix()
        try: process(path, done, SRC/f"{page}.ipynb", short, documented)
        except RuntimeError as e: print(f"docs: {e}", file=sys.stderr); return 1
        if page != 'index': pages.append(page)
    order = [default_exp(json.loads(p.read_text(encoding='utf-8'))) for p in paths]
    (SRC/'api.md').write_text(api_page(names, documented, order), encoding='utf-8')
    try: (SRC/'cli.md').write_text(cli_page(), encoding='utf-8')
    except RuntimeError as e: print(f"docs: {e}", file=sys.stderr); return 1
    chapters = {path.relative_to(NBS).with_suffix('').as_posix() for path, module in zip(paths, order) if module}
    add_toc(SRC/'index.ipynb', pages, chapters)
    if not args.no_vendor: vendor_widget_js()

    shutil.rmtree(HTML, ignore_errors=True)          # no page of an earlier build survives
    cmd = [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-E', '-q', '-b', 'html', '-c', str(DOCS), str(SRC), str(HTML)]
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode: print("docs: Sphinx reported warnings or errors (see above)"); return res.returncode
    (HTML/'.source-stamp').write_text(stamp)
    print(f"docs: built {HTML.relative_to(ROOT)}/index.html ({len(pages) + 1} notebook pages, the CLI and API pages; "
          f"Sphinx took {time.perf_counter() - start:.0f} s)")
    return 0

if __name__ == '__main__': sys.exit(main())
