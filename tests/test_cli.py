"`ae_train` in a subprocess: configuration errors, early exits, a short real run."
import os, subprocess, sys, textwrap
from pathlib import Path

import pytest
import yaml


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
