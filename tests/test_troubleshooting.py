"""The troubleshooting page (nbs/troubleshooting.ipynb) quotes only messages that ae_nb can print.

Every ```text block of the page is a message as a user sees it, its variable parts written as `...`
or `<...>`. Each must match a string of the package: a literal or f-string of ae_nb/*.py (read with
`ast`, never imported), whose `{...}` parts stand for a value (`<file>`, `(3, 8, 8)`, `'digits_ae'`)
or for another message of the package (`Training failed: {exc}` holds the error's own message). A
message reworded in the code no longer matches, and the failure names the quote to update.
"""
import ast, errno, json, os, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE, PACKAGE = ROOT/'nbs'/'troubleshooting.ipynb', ROOT/'ae_nb'
HOLE = '\x00'                          # a variable part: `{...}` in the code, `...`/`<...>` on the page
PAGE_WILDCARD = re.compile(r'\.\.\.|<[^<>\n]+>')
PROSE = re.compile(r'[A-Za-z]{2,} +[A-Za-z]{2,}')   # two words in a row: text, not a value
DEPTH = 4                              # messages inside messages inside messages ...


def page_messages(page:Path=PAGE)->list[str]:
    "The messages the page quotes: every ```text block of its markdown cells."
    cells = json.loads(page.read_text(encoding='utf-8'))['cells']
    markdown = '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')
    return [m.rstrip('\n') for m in re.findall(r'^```text\n(.*?)^```', markdown, re.M | re.S)]


def _parts(node)->list|None:
    "A string expression as a list of literal texts and HOLEs (None when `node` builds no string)."
    if isinstance(node, ast.Constant) and isinstance(node.value, str): return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value if isinstance(v, ast.Constant) else HOLE for v in node.values]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):    # 'a ' + ', '.join(...)
        left, right = _parts(node.left), _parts(node.right)
        if left is None and right is None: return None
        return (left or [HOLE]) + (right or [HOLE])
    return None


PYTHON_STRINGS = [['[Errno ', HOLE, '] ', HOLE]] + [[os.strerror(n)] for n in errno.errorcode]   # OSError's


def source_strings(package:Path=PACKAGE)->list[list]:
    "Every string the package's code builds, as parts."
    found = []
    for path in sorted(package.glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if (parts := _parts(node)) is not None: found.append(parts)
    return found


def _regex(parts:list)->str:
    "A regex of one string: its literal texts as they are, each run of HOLEs as a lazy group."
    body = ''.join('(.*?)' if p == HOLE else re.escape(p) for p in parts)
    return re.sub(r'(\(\.\*\?\))+', '(.*?)', body)


class Messages:
    "What the package can print: which of its strings print a quoted message?"
    def __init__(self, package:Path=PACKAGE, strings:list|None=None):   # `strings`: parsed already
        self.patterns, self.seen = [], {}  # (lazy regex, greedy regex, longest literal text); memo
        for parts in (source_strings(package) if strings is None else strings) + PYTHON_STRINGS:
            literal = [p for p in parts if p != HOLE]
            if not re.search(r'[A-Za-z]{3}', ''.join(literal)): continue   # `f"{a}: {b}"`: no words
            body = _regex(parts)
            self.patterns.append((re.compile(body, re.S),
                                  re.compile(body.replace('(.*?)', '(.*)'), re.S), max(literal, key=len)))

    def fills(self, text:str, depth:int)->list|None:
        "The strings that print `text` where the code has `{...}` ([] for a value or a wildcard), or None."
        if not PROSE.search(text.replace(HOLE, '0')): return []
        if depth >= DEPTH: return None
        if (used := self.matches(text, depth + 1)) is not None: return used
        lines = re.split(r'\n *(?:- )?', text)       # a list of messages, as `'\n  - '.join(...)` makes
        if len(lines) < 2: return None
        found = [self.fills(line, depth + 1) for line in lines]
        return None if None in found else [rx for used in found for rx in used]

    def matches(self, text:str, depth:int=0)->list|None:
        "The package's strings that print `text` (the page's wildcards already HOLEs), or None."
        if (text, depth) not in self.seen: self.seen[text, depth] = self._match(text, depth)
        return self.seen[text, depth]

    def _match(self, text:str, depth:int)->list|None:
        for lazy, greedy, piece in self.patterns:
            if piece not in text: continue
            for rx in (lazy, greedy):
                if not (m := rx.fullmatch(text)): continue
                found = [self.fills(g, depth) for g in m.groups()]
                if None not in found: return [lazy] + [r for used in found for r in used]
        # `data.raw_glob: message`, `my.yaml:2: message`: the key or file of a problem, then the problem
        if depth < DEPTH and (m := re.fullmatch(r'[^\s:]*[./][^\s:]*(?::\d+)?: (.+)', text, re.S)):
            return self.matches(m[1], depth + 1)
        return None

    def explain(self, quote:str)->list|None:
        "The strings that print a quoted block, whole or line by line (lines of wildcards say nothing)."
        text = PAGE_WILDCARD.sub(HOLE, quote)
        if (used := self.matches(text)) is not None: return used
        found = [self.matches(line.strip()) for line in text.splitlines()
                 if re.search('[A-Za-z]{3}', line)]
        return None if not found or None in found else [rx for used in found for rx in used]

    def printable(self, quote:str)->bool: return self.explain(quote) is not None


@pytest.fixture(scope='module')
def strings(): return source_strings()

@pytest.fixture(scope='module')
def messages(strings): return Messages(strings=strings)

QUOTES = page_messages()
IDS = [q.splitlines()[0][:50] for q in QUOTES]


def test_the_page_is_markdown_and_quotes_a_message_in_every_section():
    cells = json.loads(PAGE.read_text(encoding='utf-8'))['cells']
    assert {c['cell_type'] for c in cells} == {'markdown'}
    text = '\n'.join(''.join(c['source']) for c in cells)
    sections = re.split(r'^## ', text, flags=re.M)[1:]
    assert len(sections) >= 10, [s.splitlines()[0] for s in sections]
    assert [s.splitlines()[0] for s in sections if '```text' not in s] == []


@pytest.mark.parametrize('quote', QUOTES, ids=IDS)
def test_every_quoted_message_is_one_the_code_can_print(messages, quote):
    assert messages.printable(quote), ("nbs/troubleshooting.ipynb quotes a message that ae_nb no "
                                       f"longer prints (reworded?): update the page:\n{quote}")


def _literal_words(messages:Messages, quote:str)->list[str]:
    "For each of the package's strings that print the quote, its longest word the quote spells out too."
    said = set(re.findall(r'\b[A-Za-z]{4,}\b', PAGE_WILDCARD.sub(' ', quote)))   # words, not names
    python = {w for parts in PYTHON_STRINGS for p in parts for w in re.findall(r'[A-Za-z]{4,}', p)}
    words = []
    for rx in messages.explain(quote):
        mine = (set(re.findall(r'[A-Za-z]{4,}', re.sub(r'\\(.)', r'\1', rx.pattern))) & said) - python
        if mine and (word := max(sorted(mine), key=len)) not in words: words.append(word)
    return words

def _reword(text:str, word:str)->str: return re.sub(rf'(?<![A-Za-z]){word}(?![A-Za-z])', word + 'x', text)


@pytest.mark.parametrize('quote', QUOTES, ids=IDS)
def test_a_reworded_message_is_caught(messages, strings, quote):
    "Reword a word of each message that makes up the quote, in every string of the package: no match."
    words = _literal_words(messages, quote)
    assert words
    for word in words:
        reworded = [[p if p == HOLE else _reword(p, word) for p in parts] for parts in strings]
        assert not Messages(strings=reworded).printable(quote), f"rewording {word!r} left the quote matching"


def test_a_message_reworded_in_a_copy_of_the_package_is_caught(messages, tmp_path):
    "The same, end to end: a scratch copy of ae_nb/*.py with one message reworded no longer prints the quote."
    quote = QUOTES[0]
    assert Messages(PACKAGE).printable(quote)
    copy = tmp_path/'ae_nb'; copy.mkdir()
    for path in PACKAGE.glob('*.py'):
        text = _reword(path.read_text(encoding='utf-8'), _literal_words(messages, quote)[-1])
        (copy/path.name).write_text(text, encoding='utf-8')
    assert not Messages(copy).printable(quote)


def test_the_matcher_takes_values_and_nested_messages_and_refuses_the_rest(tmp_path):
    (tmp_path/'m.py').write_text(
        'def f(path, shape, exc, names):\n'
        '    a = f"{path}: a 3-axis array {shape} is ambiguous; set data.layout to CHW"\n'
        '    b = f"Training failed: {exc}"\n'
        '    c = "model settings differ: " + ", ".join(names)\n'
        '    d = f"{path} cannot resume this run:\\n  - " + "\\n  - ".join(names)\n')
    m = Messages(tmp_path)
    assert m.printable("Training failed: <f>: a 3-axis array (3, 8, 8) is ambiguous; set data.layout to CHW")
    assert m.printable("x.npy: a 3-axis array ... is ambiguous; set data.layout to CHW")
    assert m.printable("model settings differ: embedding_dim 8 -> 4")
    assert m.printable("Training failed: [Errno 28] No space left on device")
    assert m.printable("Training failed: <f> cannot resume this run:\n  - model settings differ: x -> y"
                       "\n  - model settings differ: z")
    assert m.printable("data.layout: x.npy: a 3-axis array ... is ambiguous; set data.layout to CHW")
    assert not m.printable("Training failed: the array is not valid here")       # prose is no value
    assert not m.printable("<f>: a 3-axis array (3, 8, 8) is unclear; set data.layout to CHW")
    assert not m.printable("<f>: a 3-axis array (3, 8, 8) is ambiguous")         # half a message
    assert not m.printable("Training failed: <f> cannot resume this run:\n  - the settings changed")
