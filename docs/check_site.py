#!/usr/bin/env python
"""Check the built documentation site (docs/_build/html).

    python docs/check_site.py [SITE]     # or: make -C docs check (builds first)

Without a browser: every page of the table of contents exists, every internal link (and its #anchor)
resolves, and every public name of the package has an API entry. With Chromium (/usr/bin/chromium, or
$CHROMIUM): the pages load in a headless browser without JavaScript errors, search finds `TrainerAE`, the
widgets of the widgets chapter render from their saved state, and screenshots are saved in
docs/_build/screenshots.
"""
from __future__ import annotations
import base64, html.parser, importlib, json, os, pkgutil, re, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(DOCS), str(ROOT)]
from docs_helpers import read_settings, source_stamp

LIB = read_settings(ROOT/'settings.ini')['lib_name']
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
    return sorted(set(names) | {'index.html', 'api.html', 'search.html', 'genindex.html'})

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


def check_in_browser(site:Path, binary:str, shots:Path=SHOTS)->list[str]:
    "Load every page, search for `TrainerAE`, render the widgets, and save screenshots."
    problems = []
    with Browser(binary) as b:
        for name in expected_pages(site):
            b.open((site/name).as_uri())
            if not b.eval("document.querySelector('article') !== null && document.title.length > 0"):
                problems.append(f"{name}: page did not load")
            problems += [f"{name}: JavaScript error: {e.splitlines()[0]}" for e in b.errors()]
            broken = b.eval("[...document.images].filter(i => !i.classList.contains('widget-image') && !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            problems += [f"{name}: image did not load: {src}" for src in broken]
        b.open((site/'index.html').as_uri()); b.screenshot(shots/'home.png')
        b.open((site/'api.html').as_uri()); b.screenshot(shots/'api.png')

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
                if not b.eval("[...document.querySelectorAll('img.widget-image')].some(i => i.naturalWidth > 0)"):
                    problems.append("05_widgets.html: widget images did not render")
    return problems


def main(argv=None)->int:
    args = sys.argv[1:] if argv is None else argv
    site = Path(args[0]) if args else SITE
    if not (site/'index.html').exists(): print(f"{site}: no site built (run make -C docs html)"); return 1
    if is_stale(site): print(f"check_site: {site} was built from older sources: rebuild it (make -C docs html)")
    problems = check_pages(site) + check_links(site) + check_api(site)
    binary = chromium_path()
    if binary: problems += check_in_browser(site, binary)
    else: print("check_site: no Chromium found: browser checks skipped")
    for p in problems: print(p)
    print(f"check_site: {len(problems)} problem(s){'' if binary else ' (without a browser)'}"
          + (f"; screenshots in {SHOTS.relative_to(ROOT)}" if binary and SHOTS.exists() else ''))
    return 1 if problems else 0

if __name__ == '__main__': sys.exit(main())
