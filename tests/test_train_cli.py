"`ae_train` end to end in a subprocess: a real run, and interruptions that lose nothing."
import itertools, os, re, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from conftest import run_ae

# A small deterministic synthetic run: a few hundred steps, seconds on two CPU cores.
def small_run(results_dir, name, epochs=4, n=1024):
    return ['--override', 'data.source=synthetic', '--override', f'data.synthetic.n_samples={n}',
            '--override', 'data.synthetic.height=16', '--override', 'data.synthetic.width=16',
            '--override', 'data.batch_size=16', '--override', 'model.channels=[8, 16]',
            '--override', 'model.embedding_dim=4', '--override', f'training.epochs={epochs}',
            '--override', 'training.plot_every=0', '--override', 'training.checkpoint.save_every=2',
            '--override', 'logging.wandb.mode=disabled', '--override', 'experiment.deterministic=true',
            '--override', f'experiment.results_dir={results_dir}', '--override', f'experiment.name={name}']


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['model']


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa: assert torch.equal(wa[k], wb[k]), k


def test_short_run_writes_the_run_folder(ae, tmp_path):
    r = ae('ae_train', '--override', 'training.epochs=2', '--override', f'experiment.results_dir={tmp_path/"runs"}',
           '--override', 'logging.wandb.mode=disabled')
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path/'runs'/'digits_ae'
    for f in ['config.yaml', 'train.log', 'checkpoints/latest.pth', 'checkpoints/best.pth', 'checkpoints/final_checkpoint.pth']:
        assert (run/f).is_file(), f
    assert str(run.resolve()) in r.stdout
    lines = r.stdout.splitlines()
    assert lines[0] == 'ae_train: checking the configuration ...', lines[:3]
    # the model, stage by stage, before the first epoch; the stages' parameters add up to the model's
    top = next(i for i, l in enumerate(lines) if re.match(r'model: [\d,]+ parameters, input 1x8x8 -> code 8, ', l))
    first_epoch = next(i for i, l in enumerate(lines) if l.startswith('epoch '))
    assert lines[top + 1].split() == ['stage', 'layers', 'output', 'params'], lines[top:top + 3]
    stages = list(itertools.takewhile(lambda l: l.startswith('  '), lines[top + 2:]))
    assert top + 2 + len(stages) <= first_epoch and [s.split()[0] for s in stages][:1] == ['encoder.0'], stages
    total = int(re.match(r'model: ([\d,]+)', lines[top])[1].replace(',', ''))
    assert sum(int(s.split()[-1].replace(',', '')) for s in stages) == total, stages


def start_and_interrupt(tmp_path, name, signum):
    "Start a run, wait for its first epoch checkpoint, send `signum`; return (process result, stdout)."
    cmd = ['ae_train'] + small_run(tmp_path/'runs', name, epochs=6, n=2048)
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    latest = tmp_path/'runs'/name/'checkpoints'/'latest.pth'
    deadline = time.time() + 120
    while not latest.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be interrupted"
    time.sleep(0.3)  # somewhere inside the second epoch
    p.send_signal(signum)
    out, _ = p.communicate(timeout=120)
    return p.returncode, out


# SIGTERM takes the same path as SIGHUP, which tests/test_runs.py resumes exactly in the default run
@pytest.mark.parametrize('signum,code', [pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow),
                                         (signal.SIGINT, 130)])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, signum, code):
    ref = run_ae('ae_train', *small_run(tmp_path/'runs', 'reference', epochs=6, n=2048), cwd=tmp_path)
    assert ref.returncode == 0, ref.stdout + ref.stderr

    rc, out = start_and_interrupt(tmp_path, 'interrupted', signum)
    assert rc == code, out
    ckpts = tmp_path/'runs'/'interrupted'/'checkpoints'
    assert (ckpts/'emergency.pth').is_file(), out
    resume = re.search(r'Resume with: (.+)', out)
    assert resume, out
    assert 'Traceback' not in out

    r = subprocess.run(resume[1], shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_weights(tmp_path/'runs'/'reference'/'checkpoints'/'final_checkpoint.pth', ckpts/'final_checkpoint.pth')
    h_ref = torch.load(tmp_path/'runs'/'reference'/'checkpoints'/'final_checkpoint.pth', weights_only=True)['history']
    h_new = torch.load(ckpts/'final_checkpoint.pth', weights_only=True)['history']
    assert h_ref['train_loss'] == h_new['train_loss'] and h_ref['val_loss'] == h_new['val_loss']


def test_default_digits_run_beats_pca_by_half(ae, tmp_path):
    "The default configuration, as the README's first command runs it: test MSE at most half of PCA's."
    import json
    r = ae('ae_train', '--override', f'experiment.results_dir={tmp_path/"runs"}', '--override', 'logging.wandb.mode=disabled')
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((tmp_path/'runs'/'digits_ae'/'report'/'metrics.json').read_text())
    assert metrics['ae_vs_pca_mse_ratio'] <= 0.5, metrics
    assert 'autoencoder / PCA test MSE' in r.stdout
