#!/usr/bin/env python
"""Check the built documentation site (docs/_build/html).

    python docs/check_site.py [SITE]     # or: make -C docs check (builds first)

Without a browser: every page of the table of contents exists, every internal link (and its #anchor)
resolves, every public name of the package has an API entry; the home page links the CLI reference and the
troubleshooting page; the CLI reference lists every option of every command; every widget is labelled as a
snapshot; every page names its notebook by a link that exists, and API entries have [source] links; no
`<factory>` default, no heading that is a link, no Python warning printed by an example. With Chromium
(/usr/bin/chromium, or $CHROMIUM): the pages load in a headless browser without JavaScript errors, no code
block of a notebook page scrolls sideways (the count of those that do, outputs included, is printed),
widgets render with their snapshot label and no red or hidden progress bar, labels stay readable in the
dark theme, search finds `TrainerAE`, and screenshots are saved in docs/_build/screenshots.
"""
from __future__ import annotations
import base64, html.parser, importlib, json, os, pkgutil, re, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(DOCS), str(ROOT)]
from docs_helpers import read_settings, source_stamp

SETTINGS = read_settings(ROOT/'settings.ini')
LIB, NBS = SETTINGS['lib_name'], ROOT/SETTINGS.get('nbs_path', 'nbs')
SOURCE = f"{SETTINGS['git_url']}/blob/{SETTINGS.get('branch', 'main')}/"   # + a path of the repository
SITE = DOCS/'_build'/'html'
SHOTS = DOCS/'_build'/'screenshots'


class _Page(html.parser.HTMLParser):
    "The ids and links of one HTML page."
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag == 'img' and a.get('src') and not a['src'].startswith(('data:', 'blob:')): self.links.append(a['src'])

def parse(path:Path)->_Page:
    page = _Page()
    page.feed(path.read_text(encoding='utf-8'))
    return page

def pages(site:Path)->list[Path]:
    "The site's own pages (Sphinx's module-source pages under _modules included)."
    return sorted(p for p in site.rglob('*.html') if '_static' not in p.parts)

def expected_pages(site:Path)->list[str]:
    "Home, every notebook page (as in nbs/) and the API page."
    nbs = ROOT/read_settings(ROOT/'settings.ini').get('nbs_path', 'nbs')
    names = [p.relative_to(nbs).with_suffix('.html').as_posix() for p in nbs.rglob('*.ipynb')
             if not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts)]
    return sorted(set(names) | {'index.html', 'api.html', 'cli.html', 'search.html', 'genindex.html'})

def check_links(site:Path)->list[str]:
    "Every internal link and image resolves to a file of the site, and a link's #anchor to an id of that page."
    parsed = {p: parse(p) for p in pages(site)}
    problems = []
    for page, info in parsed.items():
        for href in info.links:
            parts = urlsplit(href)
            if parts.scheme or href.startswith('//'): continue
            target = (page.parent/unquote(parts.path)).resolve() if parts.path else page
            if not target.exists(): problems.append(f"{page.relative_to(site)}: broken link {href}"); continue
            if parts.fragment and target.suffix == '.html':
                ids = parsed[target].ids if target in parsed else parse(target).ids
                if unquote(parts.fragment) not in ids: problems.append(f"{page.relative_to(site)}: no anchor for {href}")
    return problems

def public_names()->list[str]:
    package = importlib.import_module(LIB)
    return [f"{LIB}.{m.name}.{n}" for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith('_')
            for n in getattr(importlib.import_module(f"{LIB}.{m.name}"), '__all__', [])]

def check_api(site:Path)->list[str]:
    "Every public name of the package has an API entry (an element with its full name as id)."
    ids = set().union(*(parse(p).ids for p in pages(site) if '_modules' not in p.parts))
    return [f"no API entry for {name}" for name in public_names() if name not in ids]

def is_stale(site:Path)->bool:
    "Whether the site was built from other notebooks or package sources than the ones in the tree now."
    stamp = site/'.source-stamp'
    return not stamp.exists() or stamp.read_text().strip() != source_stamp(ROOT)

def check_pages(site:Path)->list[str]:
    return [f"missing page {name}" for name in expected_pages(site) if not (site/name).exists()]


def _docs_module(name:str):
    "docs/NAME.py, loaded under a private name (docs/build.py must not shadow the `build` package)."
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"ae_nb_docs_{name}", DOCS/f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def notebook_pages(site:Path)->list[str]:
    "The pages made from notebooks (index excluded), as site paths: `03_trainer.html`, `tutorials/...`."
    return [n for n in expected_pages(site) if n != 'index.html' and (NBS/n).with_suffix('.ipynb').is_file()]

def code_pages(site:Path)->list[str]:
    "Pages whose code blocks must fit without scrolling: every page made from a notebook, the home page included."
    return ['index.html'] + notebook_pages(site)

def check_home(site:Path)->list[str]:
    "The home page links the CLI reference and the troubleshooting page."
    links = {urlsplit(h).path for h in parse(site/'index.html').links}
    return [f"index.html: no link to {name}" for name in ('cli.html', 'troubleshooting.html') if name not in links]

def _sections(text:str)->dict:
    "The sections of a page by id, as their text (tags removed)."
    return {m[1]: html.unescape(re.sub(r'<[^>]+>', '', m[2]))
            for m in re.finditer(r'<section id="([^"]+)">(.*?)</section>', text, re.S)}

def check_cli(site:Path)->list[str]:
    "The CLI reference has a section per console script holding every option of that command's parser."
    build, problems = _docs_module('build'), []
    sections = _sections((site/'cli.html').read_text(encoding='utf-8'))
    for command, target in build.console_scripts():
        section = sections.get(command.replace('_', '-'))
        if section is None: problems.append(f"cli.html: no section for {command}"); continue
        for action in build.command_parser(target)._actions:
            for flag in action.option_strings:
                if flag not in ('-h', '--help') and flag not in section:
                    problems.append(f"cli.html: {command}'s option {flag} is missing")
    return problems

def check_snapshots(site:Path)->list[str]:
    "Every cell output that shows a widget says above it that it is a snapshot, naming the notebook to run."
    problems = []
    for name in notebook_pages(site):
        text = (site/name).read_text(encoding='utf-8')
        source = SOURCE + (NBS/name).with_suffix('.ipynb').relative_to(ROOT).as_posix()
        for i, cell in enumerate(text.split('<div class="cell docutils container')[1:]):
            if 'application/vnd.jupyter.widget-view+json' not in cell: continue
            if 'widget-snapshot' not in cell or source not in cell:
                problems.append(f"{name}: a widget in cell {i + 1} is not labelled as a snapshot of {source}")
    return problems

def check_sources(site:Path)->list[str]:
    """Every page made from a notebook names it (the line under the title and furo's view button) by a link to
    a file that exists; generated pages (API, CLI) have no view button; API entries of functions, classes and
    methods, `@patch` ones included, have a [source] link."""
    problems = []
    for name in notebook_pages(site) + ['index.html']:
        text = (site/name).read_text(encoding='utf-8')
        links = [h for h in parse(site/name).links if h.startswith(SOURCE)]
        if not links: problems.append(f"{name}: no link to its notebook")
        problems += [f"{name}: links {h}, which is not a file of the repository" for h in links
                     if not (ROOT/unquote(h[len(SOURCE):])).is_file()]
        if name != 'index.html' and 'class="source-link' not in text: problems.append(f"{name}: no source line")
    for name in ('api.html', 'cli.html'):
        if 'view-this-page' in (site/name).read_text(encoding='utf-8'): problems.append(f"{name}: a view button")
    for page in pages(site):
        if '_modules' in page.parts: continue
        text = page.read_text(encoding='utf-8')
        for m in re.finditer(r'<dl class="py (function|class|method|property)">\s*<dt class="sig[^"]*" id="([^"]+)"(.*?)</dt>',
                             text, re.S):
            if 'viewcode-link' not in m[3]: problems.append(f"{page.relative_to(site)}: no [source] link for {m[2]}")
    return problems

def check_polish(site:Path)->list[str]:
    "No `<factory>` default, no heading that is a link, no Python warning printed by an example."
    problems = []
    for page in pages(site):
        if '_modules' in page.parts: continue
        name, text = page.relative_to(site), page.read_text(encoding='utf-8')
        if '&lt;factory&gt;' in text: problems.append(f"{name}: a default shown as <factory>")
        problems += [f"{name}: heading is a link: {html.unescape(re.sub('<[^>]+>', '', m[0]))[:60]}"
                     for m in re.finditer(r'<h[1-6]>(?:(?!</h[1-6]>).)*?class="reference internal".*?</h[1-6]>', text, re.S)]
        problems += [f"{name}: an example prints a warning: {m[1][:80]}"
                     for m in re.finditer(r'\S+:\d+: (\w+Warning: [^<\n]*)', html.unescape(re.sub(r'<[^>]+>', '', text)))]
    return problems


# ---- a headless Chromium driven over the DevTools protocol ---------------------------------------------------
def chromium_path()->str|None:
    path = os.environ.get('CHROMIUM', '/usr/bin/chromium')
    return path if Path(path).exists() else None

class Browser:
    "Headless Chromium with one page, driven over the DevTools protocol (tornado's websocket client)."
    def __init__(self, binary:str):
        self.profile = tempfile.mkdtemp(prefix='ae-nb-chromium-')
        self.proc = subprocess.Popen([binary, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                                      '--remote-debugging-port=0', f'--user-data-dir={self.profile}',
                                      '--window-size=1200,900', 'about:blank'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file, deadline = Path(self.profile)/'DevToolsActivePort', time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None: self.close(); raise RuntimeError("Chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        url = next(t['webSocketDebuggerUrl'] for t in targets if t['type'] == 'page')
        from tornado.ioloop import IOLoop
        from tornado.websocket import websocket_connect
        self.loop = IOLoop()
        self.ws = self.loop.run_sync(lambda: websocket_connect(url, max_message_size=256 * 1024 * 1024))
        self.next_id, self.events = 0, []
        self.send('Page.enable'); self.send('Runtime.enable')

    def send(self, method:str, timeout:float=60, **params)->dict:
        "Call a DevTools method and return its result (events that arrive meanwhile are kept in `events`)."
        self.next_id += 1
        msg_id = self.next_id
        async def call():
            await self.ws.write_message(json.dumps({'id': msg_id, 'method': method, 'params': params}))
            while True:
                reply = json.loads(await self.ws.read_message())
                if reply.get('id') == msg_id: return reply
                self.events.append(reply)
        reply = self.loop.run_sync(call, timeout=timeout)
        if 'error' in reply: raise RuntimeError(f"{method}: {reply['error']}")
        return reply['result']

    def open(self, url:str, timeout:float=30):
        "Navigate to `url` and wait for its load event."
        self.events.clear()
        self.send('Page.navigate', url=url)
        self.wait_for("document.readyState === 'complete'", timeout)

    def eval(self, expression:str):
        res = self.send('Runtime.evaluate', expression=expression, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in res: raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res['result'].get('value')

    def wait_for(self, expression:str, timeout:float=30)->bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(expression): return True
            time.sleep(0.2)
        return False

    def errors(self)->list[str]:
        "JavaScript exceptions thrown since the last `open`."
        return [e['params']['exceptionDetails'].get('exception', {}).get('description', str(e['params']))
                for e in self.events if e.get('method') == 'Runtime.exceptionThrown']

    def screenshot(self, path:Path, selector:str|None=None, index:int=0):
        "Save a PNG of the viewport, or of the `index`-th element matching `selector` (scrolled into view)."
        clip = None
        if selector:
            box = self.eval(f"(() => {{ const e = document.querySelectorAll({json.dumps(selector)})[{index}]; e.scrollIntoView();"
                            "const r = e.getBoundingClientRect(); return [r.x, r.y + window.scrollY, r.width, r.height]; })()")
            clip = dict(zip(('x', 'y', 'width', 'height'), box), scale=1)
        res = self.send('Page.captureScreenshot', format='png', **({'clip': clip, 'captureBeyondViewport': True} if clip else {}))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(res['data']))

    def close(self):
        if getattr(self, 'proc', None) and self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()


SCROLLING = """[...document.querySelectorAll('article pre')].filter(p => p.scrollWidth > p.clientWidth + 1).map(p => ({
    output: p.closest('.cell_output') !== null, width: p.scrollWidth - p.clientWidth,
    line: p.textContent.split(String.fromCharCode(10)).reduce((a, b) => b.length > a.length ? b : a, '').slice(0, 100)}))"""

def check_in_browser(site:Path, binary:str, shots:Path=SHOTS, report:dict|None=None)->list[str]:
    """Load every page, count code blocks that scroll sideways, search for `TrainerAE`, render the widgets, and
    save screenshots. `report`, if given, receives the counts: pages, scrolling code blocks and outputs."""
    problems, counts, strict = [], {'pages': 0, 'code': 0, 'output': 0}, set(code_pages(site))
    with Browser(binary) as b:
        for name in expected_pages(site):
            b.open((site/name).as_uri())
            counts['pages'] += 1
            if not b.eval("document.querySelector('article') !== null && document.title.length > 0"):
                problems.append(f"{name}: page did not load")
            problems += [f"{name}: JavaScript error: {e.splitlines()[0]}" for e in b.errors()]
            broken = b.eval("[...document.images].filter(i => !i.classList.contains('widget-image') && !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            problems += [f"{name}: image did not load: {src}" for src in broken]
            for block in b.eval(SCROLLING):
                counts['output' if block['output'] else 'code'] += 1
                if not block['output'] and name in strict:
                    problems.append(f"{name}: a code block scrolls sideways ({block['width']} px): {block['line']}")
            if b.eval("document.querySelector('script[type=\"application/vnd.jupyter.widget-view+json\"]') !== null"):
                b.wait_for("document.querySelectorAll('.cell_output .jupyter-widgets').length > 0", 15)
                unlabelled = b.eval("[...document.querySelectorAll('.cell_output')].filter(o => o.querySelector('.jupyter-widgets')"
                                    " && !o.querySelector('.widget-snapshot a[href$=\".ipynb\"]')).length")
                if unlabelled: problems.append(f"{name}: {unlabelled} widget output(s) without a snapshot label")
                red = b.eval("document.querySelectorAll('.cell_output .progress-bar-danger').length")
                if red: problems.append(f"{name}: {red} red progress bar(s) (an example stopped mid-way)")
                hidden = b.eval("[...document.querySelectorAll('.cell_output > .widget-subarea > .jupyter-widgets')]"
                                ".filter(w => getComputedStyle(w).visibility === 'hidden').length")
                if hidden: problems.append(f"{name}: {hidden} hidden widget(s) leaving a blank gap")
        b.open((site/'index.html').as_uri()); b.screenshot(shots/'home.png')
        b.open((site/'api.html').as_uri()); b.screenshot(shots/'api.png')
        b.open((site/'cli.html').as_uri()); b.screenshot(shots/'cli.png')
        b.open((site/'troubleshooting.html').as_uri()); b.screenshot(shots/'troubleshooting.png')

        b.open((site/'search.html').as_uri() + '?q=TrainerAE')
        if not b.wait_for("[...document.querySelectorAll('#search-results a')].some(a => a.textContent.includes('TrainerAE'))"):
            problems.append("search: no result for TrainerAE")
        b.screenshot(shots/'search.png')

        widgets = site/'05_widgets.html'
        if widgets.exists():
            b.open(widgets.as_uri())
            if not b.wait_for("document.querySelectorAll('.cell_output .jupyter-widgets').length > 0"):
                problems.append("05_widgets.html: no widget rendered")
            else:
                count = b.eval("document.querySelectorAll('.cell_output > .widget-subarea > .jupyter-widgets').length")
                for i in range(min(count, 3)): b.screenshot(shots/f'widgets_{i + 1}.png', '.cell_output > .widget-subarea > .jupyter-widgets', i)
                if not b.eval("[...document.images].some(i => i.classList.contains('widget-image') && i.naturalWidth > 0)"):
                    problems.append("05_widgets.html: widget images did not render")
            b.send('Emulation.setEmulatedMedia', features=[{'name': 'prefers-color-scheme', 'value': 'dark'}])
            b.open(widgets.as_uri())
            if b.wait_for("document.querySelectorAll('.cell_output .jupyter-widgets').length > 0"):
                b.screenshot(shots/'widgets_dark.png', '.cell_output > .widget-subarea > .jupyter-widgets', 0)
                light = b.eval("[...document.querySelectorAll('.cell_output .jupyter-widgets .widget-label, .cell_output .jupyter-widgets label')]"
                               ".filter(l => l.offsetParent && l.textContent.trim()).map(l => getComputedStyle(l).color)"
                               ".filter(c => { const v = c.match(/\\d+/g).map(Number); return v[0] + v[1] + v[2] < 300; }).length")
                if light: problems.append(f"05_widgets.html: {light} widget label(s) dark on the dark theme")
            b.send('Emulation.setEmulatedMedia', features=[])
    if report is not None: report.update(counts)
    return problems


def main(argv=None)->int:
    args = sys.argv[1:] if argv is None else argv
    site = Path(args[0]) if args else SITE
    if not (site/'index.html').exists(): print(f"{site}: no site built (run make -C docs html)"); return 1
    if is_stale(site): print(f"check_site: {site} was built from older sources: rebuild it (make -C docs html)")
    problems = (check_pages(site) + check_links(site) + check_api(site) + check_home(site) + check_cli(site)
                + check_snapshots(site) + check_sources(site) + check_polish(site))
    binary, counts = chromium_path(), {}
    if binary: problems += check_in_browser(site, binary, report=counts)
    else: print("check_site: no Chromium found: browser checks skipped")
    for p in problems: print(p)
    if counts:
        print(f"check_site: {counts['pages']} pages loaded; code blocks that scroll sideways: {counts['code']} "
              f"(allowed on none of the notebook pages), printed outputs that do: {counts['output']}")
    print(f"check_site: {len(problems)} problem(s){'' if binary else ' (without a browser)'}"
          + (f"; screenshots in {SHOTS.relative_to(ROOT)}" if binary and SHOTS.exists() else ''))
    return 1 if problems else 0

if __name__ == '__main__': sys.exit(main())
