"`ae_train` in a subprocess: configuration errors, early exits, a short real run."
import os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import yaml

from conftest import run_ae


BAD_CONFIG = textwrap.dedent("""\
    experiment:
      nmae: typo-in-a-key
    data:
      split: {train: 0.7, val: 0.2, test: 0.2}
    training:
      learning_rate: -0.01
      epochs: ten
    """)


def test_validate_config_reports_every_problem(ae, tmp_path):
    bad = tmp_path/'bad.yaml'
    bad.write_text(BAD_CONFIG)
    r = ae('ae_train', '--validate-config', '--config', str(bad))
    assert r.returncode == 1
    assert 'Traceback' not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    expected = {"bad.yaml:2: experiment.nmae: unknown key. Did you mean 'experiment.name'?": 1,
                "bad.yaml:4: data.split: train + val + test must sum to 1": 1,
                "bad.yaml:6: training.learning_rate: Input should be greater than 0": 1,
                "bad.yaml:7: training.epochs: Input should be a valid integer": 1}
    for fragment in expected: assert any(fragment in l for l in lines), (fragment, r.stderr)
    assert '4 problems' in lines[0]


def test_validate_config_valid_and_bad_override(ae):
    r = ae('ae_train', '--validate-config')
    assert (r.returncode, r.stdout.strip()) == (0, 'valid')
    r = ae('ae_train', '--validate-config', '--override', 'training.epohcs=3')
    assert r.returncode == 1 and "Did you mean 'training.epochs'" in r.stderr


def test_preset_goes_before_the_overrides_and_a_wrong_name_lists_the_presets(ae, tmp_path):
    r = ae('ae_train', '--dry-run', '--preset', 'photos', '--override', 'model.channels=[8, 16]')
    assert r.returncode == 0, r.stderr
    model = yaml.safe_load(r.stdout)['model']
    assert (model['channels'], model['strides'], model['kernel_size']) == ([8, 16], [2, 2], 5)
    assert yaml.safe_load(r.stdout)['data']['augment'] == 'dihedral'
    r = ae('ae_train', '--validate-config', '--preset', 'photo')
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert "--preset photo: no such preset (presets: photos). Did you mean 'photos'?" in r.stderr


def test_invalid_yaml_and_missing_file(ae, tmp_path):
    broken = tmp_path/'broken.yaml'
    broken.write_text("training:\n  epochs: [1, 2\n")
    r = ae('ae_train', '--config', str(broken))
    assert r.returncode == 1 and 'broken.yaml:3' in r.stderr and 'invalid YAML' in r.stderr
    r = ae('ae_train', '--config', str(tmp_path/'nope.yaml'))
    assert r.returncode == 1 and 'nope.yaml: config file not found' in r.stderr
    assert 'Traceback' not in r.stderr


def test_dry_run_prints_resolved_config_and_writes_nothing(ae, tmp_path):
    r = ae('ae_train', '--dry-run', '--override', 'training.epochs=2', '--override', f'experiment.results_dir={tmp_path/"runs"}')
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)
    assert resolved['training']['epochs'] == 2 and resolved['model']['embedding_dim'] == 8
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_clean_virtualenv_install_then_dry_run_elsewhere(tmp_path):
    "`pip install .` into a fresh virtualenv, then `ae_train --dry-run` from an unrelated folder."
    repo = Path(__file__).resolve().parents[1]
    venv = tmp_path/'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    pip = [str(venv/'bin'/'python'), '-m', 'pip', 'install', '-q']
    subprocess.run(pip + ['torch==2.13.0'], check=True, timeout=900)
    subprocess.run(pip + [str(repo)], check=True, timeout=900)
    elsewhere = tmp_path/'elsewhere'
    elsewhere.mkdir()
    r = subprocess.run([str(venv/'bin'/'ae_train'), '--dry-run'], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)['data']['source'] == 'digits'


# ---------------------------------------------------------------- start-up: the first line, Ctrl-C, light imports

def console_script(name='ae_train'):
    "The console script itself (next to this interpreter), not a shell shim that would start it."
    script = Path(sys.executable).parent/name
    return str(script) if script.exists() else shutil.which(name)


def imported(line):
    "The module a PYTHONPROFILEIMPORTTIME line reports, or None for any other line."
    return line.rsplit('|', 1)[1].strip() if line.startswith('import time:') else None


def start_run(tmp_path, env=None, **kwargs):
    "Start a default `ae_train` run in `tmp_path` (W&B off); return the process (text pipes)."
    cmd = [console_script(), '--override', f'experiment.results_dir={tmp_path/"runs"}',
           '--override', 'logging.wandb.mode=disabled']
    kwargs = {'stdout': subprocess.PIPE, 'stderr': subprocess.PIPE, **kwargs}
    return subprocess.Popen(cmd, cwd=tmp_path, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})},
                            **kwargs)


def test_a_run_says_so_within_a_second(tmp_path):
    "Well under a second on an idle machine; the bound is generous because the test machine may be busy."
    t0 = time.perf_counter()
    p = start_run(tmp_path)
    first = p.stdout.readline()
    seconds = time.perf_counter() - t0
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    print(f"first line after {seconds:.3f} s")
    assert first == 'ae_train: checking the configuration ...\n', first + out + err
    assert seconds < 3, f"first line after {seconds:.2f} s"
    assert p.returncode == 130 and 'Traceback' not in err, err[-3000:]


def test_the_first_line_comes_before_the_schema_and_torch_are_imported(tmp_path):
    "stdout and stderr share one pipe, so lines arrive in the order they were written."
    p = start_run(tmp_path, env={'PYTHONPROFILEIMPORTTIME': '1'}, stderr=subprocess.STDOUT)
    lines = []
    while (line := p.stdout.readline()) and imported(line) != 'torch': lines.append(line.rstrip('\n'))
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    modules = [imported(l) for l in lines]
    assert line and p.returncode == 130, lines[-20:]
    first = lines.index('ae_train: checking the configuration ...')
    checked = lines.index('ae_train: configuration valid; starting PyTorch ...')
    assert first < modules.index('pydantic') < checked, (first, modules.index('pydantic'), checked)
    assert not {'numpy', 'matplotlib'} & set(modules[:checked]), set(modules[:checked])


@pytest.fixture(scope='module')
def bare_start():
    "Seconds this interpreter takes here, now, to start, find the ae_nb package and exit (slowest of 3)."
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, '-c', 'import ae_nb'], check=True)
        times.append(time.perf_counter() - t0)
    print(f"bare interpreter start-up: {max(times):.3f} s")
    return max(times)


def landed_before_ae_nb(err):
    "Whether a process's stderr shows that a signal stopped it before any ae_nb module ran (CPython's start-up)."
    return ('Traceback' in err or 'Fatal Python error' in err) and f"{os.sep}ae_nb{os.sep}" not in err


@pytest.mark.parametrize('moment', [0.1, 0.3, 0.6, 1.0, 1.6, 2.5])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line_and_exit_130(tmp_path, bare_start, moment):
    """SIGINT `moment` seconds into start-up, counted from when a bare interpreter would have found the package.
    A signal that still lands while CPython itself starts (its traceback has no ae_nb frame) is CPython's to
    handle, not ae_nb's: that attempt is made again, up to three times."""
    for attempt in range(3):
        p = start_run(tmp_path)
        time.sleep(bare_start + moment)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
        if not landed_before_ae_nb(err): break
    else: pytest.skip(f"the signal landed in CPython's own start-up 3 times: {err[-500:]}")
    assert p.returncode == 130, (p.returncode, out[-2000:], err[-3000:])
    assert 'Traceback' not in out + err and 'KeyboardInterrupt' not in out + err, err[-3000:]
    if 'hyperparameters of' in out: return   # training has begun: test_runs.py covers signals from here on
    said = [l for l in out.splitlines() + err.splitlines() if 'interrupted' in l.lower()]
    assert len(said) == 1, (out, err)
    assert [l for l in err.splitlines() if l.strip()] in ([], said), err
    assert said[0] in err.splitlines()[-1:] + out.splitlines()[-1:], (out, err)


def test_early_exits_and_a_folder_glob_that_matches_nothing_never_import_torch(tmp_path):
    env, heavy = {'PYTHONPROFILEIMPORTTIME': '1'}, {'torch', 'numpy', 'matplotlib'}
    loaded = lambda r: heavy & {m.split('.')[0] for m in map(imported, r.stderr.splitlines()) if m}
    for args in (['--validate-config'], ['--dry-run']):
        r = run_ae(console_script(), *args, cwd=tmp_path, env=env)
        assert r.returncode == 0 and not loaded(r), (args, loaded(r), r.stderr[-2000:])
    glob = str(tmp_path/'data'/'2025_*'/'*.npy')
    r = run_ae(console_script(), '--override', 'data.source=folder', '--override', f'data.raw_glob={glob}',
               '--override', f'experiment.results_dir={tmp_path/"runs"}', cwd=tmp_path, env=env)
    messages = [l for l in r.stderr.splitlines() if not imported(l)]
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    assert r.stdout == 'ae_train: checking the configuration ...\n', r.stdout
    assert messages == ['ae_train: invalid configuration (1 problem):',
                        f"  data.raw_glob: '{glob}' matches no file or folder"], messages
    assert not loaded(r), loaded(r)
    assert list(tmp_path.iterdir()) == []
