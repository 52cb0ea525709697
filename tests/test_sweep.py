"Sweeps: three tiny trials, a killed sweep that resumes, two workers sharing one study, pruning, the report."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from conftest import run_ae
from ae_nb.sweep import trial_values

optuna = pytest.importorskip('optuna')


def write_sweep(folder, trials=3, space=None, pruner='none', name='tiny', epochs=2, n=256, sampler='tpe'):
    "A sweep file over a tiny synthetic problem, and the `ae_sweep` arguments that run it in `folder`."
    space = space or {'model.embedding_dim': {'choices': [2, 4, 8]}}
    spec = {'study': {'name': name, 'trials': trials, 'pruner': pruner, 'startup_trials': 1, 'sampler': sampler,
                      'warmup_epochs': 1},
            'base': ['data.source=synthetic', f'data.synthetic.n_samples={n}', 'data.synthetic.height=8',
                     'data.synthetic.width=8', 'data.batch_size=32', 'model.channels=[4, 8]',
                     f'training.epochs={epochs}', 'training.plot_every=0', 'resources.threads=1',
                     'experiment.deterministic=true', 'logging.wandb.mode=disabled', 'logging.progress=never',
                     f'experiment.results_dir={folder}'],
            'space': space}
    path = Path(folder)/f'{name}.yaml'
    path.write_text(json.dumps(spec))   # JSON is YAML
    return path


def trials(folder, name='tiny'):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{Path(folder)/name/'study.db'}")
    return study.get_trials(deepcopy=False)


def test_a_sweep_of_three_tiny_trials_leaves_three_runs_and_a_report(tmp_path):
    r = run_ae('ae_sweep', str(write_sweep(tmp_path, sampler='grid')), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ['COMPLETE'] * 3
    assert sorted(trial_values(t)['model.embedding_dim'] for t in done) == [2, 4, 8]   # the grid, once each
    for t in done:   # every trial an ordinary run folder, its objective the best validation loss
        run = tmp_path/'tiny'/t.user_attrs['run']
        assert (run/'report'/'metrics.json').is_file() and (run/'checkpoints'/'best.pth').is_file()
        metrics = json.loads((run/'report'/'metrics.json').read_text())
        assert t.value == pytest.approx(metrics['training']['best_val_loss'])
    report = tmp_path/'tiny'/'sweep'
    assert (report/'rate_distortion.png').is_file() and 'ae_train' in (report/'report.md').read_text()
    assert r.stdout.count('sweep: trial ') == 3 and '3/3 done' in r.stdout and 'min left' in r.stdout


def test_a_killed_sweep_resumes_its_cut_trial_in_its_folder(tmp_path):
    "kill -9 in the middle of trial 1: the rerun keeps trial 0, resumes trial 1 from its checkpoint, runs 2."
    spec = write_sweep(tmp_path, epochs=6, n=2048, sampler='grid')
    p = subprocess.Popen(['ae_sweep', str(spec)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    latest = tmp_path/'tiny'/'trial_0001'/'checkpoints'/'latest.pth'
    deadline = time.time() + 300
    while not latest.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
    assert p.poll() is None, p.communicate()[0]
    p.kill(); p.wait(30)
    r = run_ae('ae_sweep', str(spec), cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'trial 1 was cut short; it will resume in trial_0001' in r.stdout, r.stdout
    done = {t.number: t for t in trials(tmp_path)}
    assert done[0].state.name == 'COMPLETE' and done[1].state.name == 'FAIL'
    retry = next(t for t in done.values() if t.user_attrs.get('resume_of') == 1)
    assert retry.state.name == 'COMPLETE' and retry.user_attrs['run'] == 'trial_0001'
    assert retry.params == done[1].params
    log = (tmp_path/'tiny'/'trial_0001'/'train.log').read_text()
    assert 'resuming from' in log and 'took over the run folder' in log
    assert sum(t.state.name == 'COMPLETE' for t in done.values()) == 3


def test_two_workers_share_one_study(tmp_path):
    spec = write_sweep(tmp_path, trials=4, space={'model.embedding_dim': {'low': 2, 'high': 8}})
    workers = [subprocess.Popen(['ae_sweep', str(spec)], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    done = trials(tmp_path)
    complete = [t for t in done if t.state.name == 'COMPLETE']
    assert 4 <= len(complete) <= 5                       # each worker may finish the trial it had started
    assert all('sweep: trial' in o for o in outs)        # both took part
    runs = [t.user_attrs['run'] for t in complete]
    assert len(set(runs)) == len(runs)                   # one run folder per trial, never shared


def test_hopeless_trials_are_pruned_from_their_validation_loss(tmp_path):
    "A learning rate of 1e-6 learns nothing: after a good trial, it is stopped at its first epochs."
    space = {'training.learning_rate': {'choices': [0.01, 1.0e-6]}}
    spec = write_sweep(tmp_path, trials=2, space=space, pruner='median', epochs=4)
    (tmp_path/'tiny').mkdir()
    study = optuna.create_study(study_name='tiny', storage=f"sqlite:///{tmp_path/'tiny'/'study.db'}")
    for lr in (0.01, 1.0e-6):   # in this order: the good trial sets the median the bad one is judged by
        study.enqueue_trial({'training.learning_rate': json.dumps(lr)})
    r = run_ae('ae_sweep', str(spec), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    states = [t.state.name for t in trials(tmp_path)]
    assert states == ['COMPLETE', 'PRUNED'], (states, r.stdout)
    pruned = trials(tmp_path)[1]
    run = tmp_path/'tiny'/pruned.user_attrs['run']
    assert 'stopping early: pruned by the sweep' in (run/'train.log').read_text()
    epochs = json.loads((run/'report'/'metrics.json').read_text())['training']['epochs']
    assert 1 <= epochs < 4   # stopped before its 4 epochs, and still a whole run with its report


def test_a_bad_sweep_file_is_refused_naming_file_and_line(tmp_path):
    bad = tmp_path/'bad.yaml'
    bad.write_text("space:\n  model.embeding_dim: {choices: [2]}\n")
    r = run_ae('ae_sweep', str(bad), cwd=tmp_path)
    assert r.returncode == 1 and 'bad.yaml:2: space.model.embeding_dim: not a config key' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr


OPEN = """
import os, sys, time
from pathlib import Path
from ae_nb.sweep import SweepSpec, open_study
spec = SweepSpec.model_validate({'study': {'name': 'tiny'}, 'space': {'model.embedding_dim': {'choices': [2]}}})
for folder in map(Path, sys.argv[1:]):
    (folder/f'ready_{os.getpid()}').touch()
    while not (folder/'go').exists(): time.sleep(0.001)
    open_study(spec, folder/'tiny')
"""


def test_workers_that_start_together_all_open_the_new_study(tmp_path):
    "Four workers released at one moment on a study file none has made, five times: each opens it, none fails."
    folders = [tmp_path/str(round) for round in range(5)]   # without the retry, most rounds fail
    for folder in folders: folder.mkdir()
    workers = [subprocess.Popen([sys.executable, '-c', OPEN, *map(str, folders)], stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    for folder in folders:
        deadline = time.time() + 120
        while len(list(folder.glob('ready_*'))) < sum(w.poll() is None for w in workers):   # all still alive
            assert time.time() < deadline; time.sleep(0.01)
        (folder/'go').touch()
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, '\n'.join(errors)
