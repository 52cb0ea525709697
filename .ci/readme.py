#!/usr/bin/env python
"""Render README.md from nbs/index.ipynb with nbdev's processors and nbconvert's markdown exporter.

`python .ci/readme.py` writes README.md; `python .ci/readme.py --check` exits 1 when README.md differs from
what the notebook renders to (CI runs the check, so the two cannot drift).
"""
import re, sys
from pathlib import Path

import nbformat
from execnb.nbio import read_nb
from nbconvert import MarkdownExporter
from nbdev.process import NBProcessor
from nbdev.processors import clean_magics, filter_stream_, hide_, hide_line, rm_export, strip_ansi

ROOT = Path(__file__).resolve().parent.parent
NB, README = ROOT/'nbs'/'index.ipynb', ROOT/'README.md'


def _to_readme_links(md: str) -> str:
    "Point relative links and images of the notebook (relative to nbs/) at the same files from the repo root."
    return re.sub(r'(\]\()(?!https?://|#|/)([^)\s]+)', lambda m: m[1] + 'nbs/' + m[2], md)


def render() -> str:
    nb = read_nb(NB)
    NBProcessor(NB, [hide_, hide_line, filter_stream_, rm_export, clean_magics, strip_ansi], nb=nb).process()
    body, _ = MarkdownExporter(exclude_output_prompt=True).from_notebook_node(nbformat.from_dict(dict(nb)))
    body = re.sub(r'\n{3,}', '\n\n', _to_readme_links(body)).strip() + '\n'
    header = "<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n\n"
    return header + body


if __name__ == '__main__':
    text = render()
    if '--check' in sys.argv[1:]:
        if README.read_text(encoding='utf-8') != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py` and commit it.")
        print("README.md matches nbs/index.ipynb")
    else:
        README.write_text(text, encoding='utf-8')
        print(f"wrote {README.relative_to(ROOT)}")
