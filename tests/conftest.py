"Shared pytest setup: W&B never touches the network, plots never need a display, slow tests are opt-in."
import os, subprocess, sys
from pathlib import Path

import pytest

os.environ.setdefault('WANDB_MODE', 'disabled')
os.environ.setdefault('WANDB_SILENT', 'true')
os.environ.setdefault('MPLBACKEND', 'Agg')


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line('markers', "slow: takes minutes (installs into a fresh virtualenv, long runs); run with --runslow")
    # Most tests start ae_nb in a subprocess. Compile the package once, so that none of them has to:
    # where PYTHONDONTWRITEBYTECODE is set (many CI images) every process would compile it again.
    import compileall, importlib.util
    compileall.compile_dir(Path(importlib.util.find_spec('ae_nb').origin).parent, quiet=1)


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'): return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)


def run_ae(*args, cwd=None, timeout=300, env=None, **kwargs):
    "Run an ae_nb console script in a subprocess; return the CompletedProcess (text output)."
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env, **kwargs)


@pytest.fixture
def one_thread():
    "In-process training of tiny models: one CPU thread is fastest and does not fight other processes for cores."
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def ae(tmp_path):
    "Call `ae(script, *args)` to run an ae_nb command inside `tmp_path`."
    return lambda *args, **kw: run_ae(*args, cwd=kw.pop('cwd', tmp_path), **kw)
