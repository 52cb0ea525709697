"""Documentation tooling: the build helpers, and the built site (links, API entries; in headless Chromium:
pages, search, rendered widgets). Site checks need `make -C docs html` first; browser checks need Chromium."""
import importlib.util, subprocess, sys
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

helpers, build, check_site = _load('docs_helpers'), _load('build'), _load('check_site')
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


@needs_site
def test_site_pages_links_and_api_entries():
    assert check_site.check_pages(SITE) == []
    assert check_site.check_links(SITE) == []
    assert check_site.check_api(SITE) == []


@needs_site
@needs_browser
def test_site_in_a_headless_browser(tmp_path):
    assert check_site.check_in_browser(SITE, check_site.chromium_path(), shots=tmp_path) == []
    assert {'home.png', 'api.png', 'search.png', 'widgets_1.png'} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.slow
def test_docs_build_with_zero_warnings():
    res = subprocess.run([sys.executable, str(DOCS/'build.py')], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert check_site.main([str(SITE)]) == 0
