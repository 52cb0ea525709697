"Real runs side by side: `compare_runs` and `ae_report --compare` on three tiny trainings."
import json, os, subprocess
from pathlib import Path

import pytest

from ae_nb.compare import compare_runs
from conftest import run_ae

DIMS = (2, 4, 8)                                    # model.embedding_dim of the three runs
TINY = ['data.source=synthetic', 'data.synthetic.height=8', 'data.synthetic.width=8',
        'data.synthetic.n_samples=256', 'training.epochs=2', 'model.channels=[4, 8]',
        'resources.threads=1', 'logging.wandb.mode=disabled', 'logging.progress=never',
        'training.plot_every=0', 'experiment.deterministic=true', 'experiment.results_dir=results']


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    "Three finished runs under one results folder, trained side by side."
    root = tmp_path_factory.mktemp('compare')
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'WANDB_MODE': 'disabled', 'MPLBACKEND': 'Agg'}
    runs = []
    for dim in DIMS:
        overrides = TINY + [f'experiment.name=code{dim}', f'model.embedding_dim={dim}']
        args = ['ae_train'] + [a for o in overrides for a in ('--override', o)]
        runs.append(subprocess.Popen(args, cwd=root, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT))
    try: outputs = [run.communicate(timeout=180)[0] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None: run.kill(); run.wait()
    for run, out in zip(runs, outputs): assert run.returncode == 0, out[-3000:]
    return root/'results'


def test_compare_runs_shows_what_differs_and_what_it_bought(results):
    rows = compare_runs(results)
    assert sorted(r['run'] for r in rows) == [f'code{d}' for d in DIMS]
    # the one setting that differs is the one column of settings: names and folders do not count
    assert list(rows[0]) == ['run', 'state', 'model.embedding_dim', 'test_mse', 'test_ssim',
                             'pca_mse', 'ratio_to_pca', 'best_val_loss', 'epochs', 'wall_time_s']
    for row in rows:
        metrics = json.loads((results/row['run']/'report'/'metrics.json').read_text())
        assert row['state'] == 'finished' and row['run'] == f"code{row['model.embedding_dim']}"
        assert row['model.embedding_dim'] == metrics['model']['embedding_dim']
        assert row['test_mse'] == metrics['test']['mse']
        assert row['test_ssim'] == metrics['test']['ssim']
        assert row['pca_mse'] == metrics['pca']['mse']
        assert row['ratio_to_pca'] == metrics['ae_vs_pca_mse_ratio']
        assert row['ratio_to_pca'] == pytest.approx(metrics['test']['mse'] / metrics['pca']['mse'])
        assert row['best_val_loss'] == metrics['training']['best_val_loss'] and row['epochs'] == 2
        assert row['wall_time_s'] == metrics['wall_time_s'] and row['wall_time_s'] > 0
    ratios = [r['ratio_to_pca'] for r in rows]
    assert ratios == sorted(ratios)                              # best ratio to PCA first


def test_ae_report_compare_prints_the_table(results):
    out = run_ae('ae_report', '--compare', str(results), timeout=60)
    assert out.returncode == 0, out.stderr
    header, rule, *lines = out.stdout.strip().splitlines()
    columns = header.split()
    assert columns[:3] == ['run', 'state', 'model.embedding_dim'] and set(rule) <= {'-', ' '}
    rows = {r['run']: r for r in compare_runs(results)}
    assert [line.split()[0] for line in lines] == list(rows)     # one line per run, in order
    for line in lines:
        cells = dict(zip(columns, line.split()))
        row = rows[cells['run']]
        assert cells['model.embedding_dim'] == str(row['model.embedding_dim'])   # its code size
        assert cells['run'] == f"code{row['model.embedding_dim']}" and cells['state'] == 'finished'
        assert float(cells['ratio_to_pca']) == pytest.approx(row['ratio_to_pca'], rel=1e-3)


def test_ae_report_compare_on_a_missing_folder_is_one_line(capsys):
    from ae_nb.cli import report_main          # the console script's entry point, in-process
    with pytest.raises(SystemExit) as exit: report_main(['--compare', '/nonexistent'])
    out, err = capsys.readouterr()
    assert exit.value.code == 1 and out == ''
    assert err.splitlines() == ['error: --compare /nonexistent: no such folder']


def test_runs_browser_opens_each_real_run(results):
    from ae_nb.widgets import RunsBrowser
    browser = RunsBrowser(results, sort_by='model.embedding_dim')
    assert [r['run'] for r in browser.shown] == [f'code{d}' for d in DIMS]
    for dim in DIMS:
        browser.select(f'code{dim}')
        for figure in ('best_worst', 'loss_curves', 'error_histogram', 'embedding_map'):
            png = (results/f'code{dim}'/'report'/f'{figure}.png').read_bytes()
            assert browser.images[figure].value == png
        assert f'code size <b>{dim}</b>' in browser.details.value
        assert f'PCA-{dim} MSE' in browser.details.value
