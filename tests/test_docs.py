"""Documentation tooling: the build helpers, and the built site (links, API entries, the CLI reference, the
troubleshooting page, snapshot labels, links to the sources; in headless Chromium: pages, code blocks that
scroll, search, rendered widgets). Site checks need `make -C docs html` first; browser checks need Chromium."""
import importlib.util, json, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS, SITE = ROOT/'docs', ROOT/'docs'/'_build'/'html'
def _load(name):
    "Load docs/NAME.py under a private module name, leaving sys.path as it was (docs/build.py must not shadow `build`)."
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(f"ae_nb_docs_{name}", DOCS/f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally: sys.path[:] = saved

helpers, build, check_site, conf = _load('docs_helpers'), _load('build'), _load('check_site'), _load('conf')
docments_fields, escape_rst = helpers.docments_fields, helpers.escape_rst

needs_site = pytest.mark.skipif(not (SITE/'index.html').exists() or check_site.is_stale(SITE),
                                reason="docs not built from the current sources: run make -C docs html")
needs_browser = pytest.mark.skipif(check_site.chromium_path() is None, reason="no Chromium (/usr/bin/chromium)")


def test_cells_skipped_like_nbdev_test():
    assert build.directives("#| export\n#| eval: false\nx = 1\n#| not a directive") == {'export': '', 'eval:': 'false'}
    assert build.skipped_by_tests("#| slow\ntrain()") and build.skipped_by_tests("#| eval: false\nx")
    assert build.skipped_by_tests("#| hide\nimport nbdev; nbdev.nbdev_export()")
    assert not build.skipped_by_tests("#| hide\nfrom fastcore.test import *")


def test_autodoc_entries_match_the_kind_of_object():
    assert build.autodoc_directive('ae_nb.config.load_config') == 'autofunction'
    assert build.autodoc_directive('ae_nb.config.AEConfig') == 'autoclass'
    assert build.autodoc_directive('ae_nb.config.Stride') == 'autodata'
    assert build.autodoc_directive('ae_nb.widgets.ConfigEditor.save') == 'automethod'
    assert build.autodoc_directive('ae_nb.widgets.ReconstructionExplorer.order') == 'autoproperty'
    assert build.autodoc_block('ae_nb.config.run_dir') == "```{rst}\n.. autofunction:: ae_nb.config.run_dir\n```"


def test_show_doc_names_resolve_to_the_module_that_exports_them():
    to_doc = build.to_autodoc('ae_nb.widgets', set(), {'load_config': 'ae_nb.config.load_config'})
    assert to_doc.full_name('ConfigEditor.save') == 'ae_nb.widgets.ConfigEditor.save'
    assert to_doc.full_name('load_config') == 'ae_nb.config.load_config'
    with pytest.raises(ValueError, match='nowhere is neither in ae_nb.widgets'): to_doc.full_name('nowhere')


def test_docments_become_parameter_docs_and_markdown_is_escaped():
    from ae_nb.config import ModelConfig, load_config
    assert docments_fields(load_config) == [":param path: YAML file; `None` for the packaged default",
                                            ":returns: the mapping as written, with its source and key lines"]
    assert ":param embedding_dim: Size of the latent code (the embedding)." in docments_fields(ModelConfig)
    assert escape_rst("raw/2025_* and `2025_*` |x|") == "raw/2025\\_\\* and `2025_*` \\|x\\|"
    # Markdown code spans that reST cannot end (a blank inside the backticks, a word right after them)
    assert escape_rst("`file:line: ` for `key`") == "`file:line:` for `key`"
    assert escape_rst("the `--override`s, x`y`") == "the `--override`\\ s, x\\ `y`"


def test_public_names_in_prose_become_links():
    class Cell(dict):
        __getattr__, __setattr__ = dict.get, dict.__setitem__
    cell = Cell(cell_type='markdown', source="Use `load_config`, not `x`:\n```\n`load_config`\n```")
    build.link_names({'load_config': 'ae_nb.config.load_config'})(cell)
    assert cell.source == "Use {py:obj}`load_config <ae_nb.config.load_config>`, not `x`:\n```\n`load_config`\n```"


def test_cli_reference_is_built_from_the_commands_own_parsers(tmp_path, monkeypatch):
    (tmp_path/'fake_tool.py').write_text(
        "import argparse\nran = []\n"
        "def main(argv=None):\n"
        "    p = argparse.ArgumentParser(prog='fake', description='Does a thing.')\n"
        "    p.add_argument('--size', type=int, default=3, help='how big')\n"
        "    p.add_argument('--mode', choices=['a', 'b'], required=True, help='which one (a|b)')\n"
        "    p.parse_args(argv)\n    ran.append('work')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = build.command_parser('fake_tool:main')
    import fake_tool
    assert parser.prog == 'fake' and fake_tool.ran == []             # caught at parse_args: no work done
    rows = build.option_rows(parser)
    assert rows == ["| `--size SIZE` | how big (default: `3`) |",
                    "| `--mode {a,b}` | which one (a\\|b) (required) |"]
    page = build.cli_page()                        # the package's own commands, from settings.ini
    for command, target in build.console_scripts():
        assert f"## {command}" in page
        for action in build.command_parser(target)._actions:
            assert all(f in page for f in action.option_strings if f not in ('-h', '--help')), action
    assert {'ae_train', 'ae_report', 'ae_embed', 'ae_score'} <= {c for c, _ in build.console_scripts()}


def _widget_nb():
    "A notebook with a closed (hidden) progress bar, a red one, and a live widget, as nbclient saves them."
    def hbox(layout, bar): return {'model_name': 'HBoxModel', 'state': {'layout': f'IPY_MODEL_{layout}',
                                   'children': [f'IPY_MODEL_{bar}']}}
    state = {'L1': {'model_name': 'LayoutModel', 'state': {'visibility': 'hidden'}},
             'L2': {'model_name': 'LayoutModel', 'state': {}},
             'P1': {'model_name': 'FloatProgressModel', 'state': {'bar_style': ''}},
             'P2': {'model_name': 'FloatProgressModel', 'state': {'bar_style': 'danger'}},
             'closed': hbox('L1', 'P1'), 'failed': hbox('L2', 'P2'),
             'form': {'model_name': 'VBoxModel', 'state': {'layout': 'IPY_MODEL_L2', 'children': []}}}
    view = lambda i: {'output_type': 'display_data', 'data': {build.WIDGET_VIEW: {'model_id': i}}, 'metadata': {}}
    text = {'output_type': 'stream', 'name': 'stdout', 'text': 'done\n'}
    cells = [{'cell_type': 'code', 'source': 'x', 'outputs': [view('closed'), text]},
             {'cell_type': 'code', 'source': 'y', 'outputs': [view('failed')]},
             {'cell_type': 'code', 'source': 'z', 'outputs': [text, view('form'), view('form')]}]
    return {'cells': cells, 'metadata': {'widgets': {'application/vnd.jupyter.widget-state+json': {'state': state}}}}


def test_widgets_show_as_labelled_snapshots_and_spent_progress_bars_go():
    nb = _widget_nb()
    build.widget_snapshots(nb, build.NBS/'05_widgets.ipynb')
    kinds = [[next(iter(o['data']), None) if 'data' in o else o['output_type'] for o in c['outputs']] for c in nb['cells']]
    assert kinds == [['stream'], [], ['stream', 'text/html', build.WIDGET_VIEW, build.WIDGET_VIEW]]
    note = nb['cells'][2]['outputs'][1]['data']['text/html']
    assert 'Static snapshot of a live widget' in note and 'widget-snapshot' in note
    assert f'href="{build.SETTINGS["git_url"]}/blob/main/nbs/05_widgets.ipynb"' in note


def test_names_in_headings_stay_plain_and_site_urls_become_internal_links():
    class Cell(dict):
        __getattr__, __setattr__ = dict.get, dict.__setitem__
    cell = Cell(cell_type='markdown', source="## `load_config`\n\nSee `load_config`.")
    build.link_names({'load_config': 'ae_nb.config.load_config'})(cell)
    assert cell.source == "## `load_config`\n\nSee {py:obj}`load_config <ae_nb.config.load_config>`."
    cell = Cell(cell_type='markdown', source=f"[ref]({build.DOC_URL}/cli.html), [t]({build.DOC_URL}/troubleshooting.html#x)")
    build.site_links('tutorials/01_digits_in_a_notebook')(cell)
    assert cell.source == "[ref](../cli.md), [t](../troubleshooting.ipynb#x)"


def test_toc_has_chapters_tutorials_and_the_reference_pages(tmp_path):
    index = tmp_path/'index.ipynb'
    index.write_text(json.dumps({'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    build.add_toc(index, ['00_config', 'reliability', 'troubleshooting', 'tutorials/01_x'], {'00_config'})
    toc = json.loads(index.read_text())['cells'][-1]['source']
    assert ":caption: Chapters\n\n00_config\n" in toc and ":caption: Tutorials\n\ntutorials/01_x\n" in toc
    assert ":caption: Reference\n\ncli\ntroubleshooting\nreliability\napi\n" in toc


def test_patched_methods_and_properties_get_source_links_and_factories_their_defaults():
    from sphinx.pycode import ModuleAnalyzer
    analyzer = ModuleAnalyzer.for_module('ae_nb.widgets'); analyzer.find_tags()
    assert 'ConfigEditor.save' not in analyzer.tags           # what viewcode alone knows of a @patch method
    code, tags = conf._patched_source(None, 'ae_nb.widgets')
    import inspect
    from ae_nb.widgets import ConfigEditor
    lines, start = inspect.getsourcelines(ConfigEditor.save)
    assert tags['ConfigEditor.save'] == ('def', start, start + len(lines) - 1)
    assert conf._property_module(None, 'ae_nb.trainer', 'TrainerAE.position') == 'ae_nb.trainer'
    assert conf._property_module(None, 'ae_nb.trainer', 'TrainerAE.train') is None
    from ae_nb.config import DataConfig
    sig, _ = conf._factory_defaults(None, 'class', 'DataConfig', DataConfig, {}, '(*, x=1, split=<factory>)', None)
    assert sig == '(*, x=1, split=SplitConfig())'


def test_the_home_page_says_where_the_code_comes_from():
    index = json.loads((ROOT/'nbs'/'index.ipynb').read_text(encoding='utf-8'))
    text = '\n'.join(''.join(c['source']) for c in index['cells'])
    git_url = build.SETTINGS['git_url']
    assert f"git clone {git_url}" in text
    assert all(f in text for f in ('ae_report --checkpoint', 'ae_embed --checkpoint', 'ae_score --checkpoint',
                                   'load_model(', f"{build.DOC_URL}/cli.html", 'troubleshooting.ipynb'))
    assert 'anchor_bench' not in text and '$ANCHOR' not in text


@needs_site
def test_site_pages_links_and_api_entries():
    assert check_site.check_pages(SITE) == []
    assert check_site.check_links(SITE) == []
    assert check_site.check_api(SITE) == []


@needs_site
def test_site_links_its_reference_pages_labels_widgets_and_names_sources():
    assert check_site.check_home(SITE) == []
    assert check_site.check_cli(SITE) == []
    assert check_site.check_snapshots(SITE) == []
    assert check_site.check_sources(SITE) == []
    assert check_site.check_polish(SITE) == []


@needs_site
@needs_browser
def test_site_in_a_headless_browser(tmp_path):
    counts = {}
    assert check_site.check_in_browser(SITE, check_site.chromium_path(), shots=tmp_path, report=counts) == []
    assert counts['pages'] == len(check_site.expected_pages(SITE))
    assert {'home.png', 'api.png', 'cli.png', 'troubleshooting.png', 'search.png', 'widgets_1.png',
            'widgets_dark.png'} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.slow
def test_docs_build_with_zero_warnings():
    res = subprocess.run([sys.executable, str(DOCS/'build.py')], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert check_site.main([str(SITE)]) == 0


def test_every_notebook_opens_with_a_python_kernel():
    "Jupyter, nbdev_test and the docs build all start a notebook's own kernel; none should have to ask."
    notebooks = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)
    assert len(notebooks) > 10
    specs = {p.relative_to(ROOT/'nbs').as_posix(): json.loads(p.read_text())['metadata'].get('kernelspec')
             for p in notebooks}
    assert {k: v for k, v in specs.items() if not v or (v['name'], v['language']) != ('python3', 'python')} == {}


def test_no_code_line_of_a_notebook_is_over_100_characters():
    "The site shows 100 characters of code without scrolling, and the style keeps exported lines within 100."
    long = [f"{p.relative_to(ROOT)}: {line[:60]}..." for p in sorted((ROOT/'nbs').rglob('*.ipynb'))
            if '.ipynb_checkpoints' not in p.parts
            for cell in json.loads(p.read_text())['cells'] if cell['cell_type'] == 'code'
            for line in ''.join(cell['source']).splitlines() if len(line) > 100]
    assert long == []


def test_no_exported_line_is_over_100_characters():
    """What nbdev writes from the notebooks keeps to 100 characters too, the chapter summaries included; only the
    `__all__` list, which nbdev itself wraps at 120, and the generated index `_modidx.py` are left out."""
    long = []
    for path in sorted((ROOT/'ae_nb').glob('*.py')):
        if path.name == '_modidx.py': continue
        in_all = False
        for n, line in enumerate(path.read_text().splitlines(), 1):
            in_all = line.startswith('__all__ = [') or (in_all and line.startswith(' ' * 11))
            if len(line) > 100 and not in_all: long.append(f"{path.name}:{n}: {line[:60]}...")
    assert long == []
