"`ae_report`, `ae_embed` and `ae_score` in subprocesses, from the checkpoint of a real (tiny) run."
import csv, shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_ae


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A tiny synthetic run; returns its run folder."
    root = tmp_path_factory.mktemp('tools')
    r = run_ae('ae_train', '--override', 'data.source=synthetic', '--override', 'data.synthetic.n_samples=256',
               '--override', 'data.synthetic.height=16', '--override', 'data.synthetic.width=16',
               '--override', 'model.embedding_dim=4', '--override', 'training.epochs=2', '--override', 'training.plot_every=0',
               '--override', 'logging.wandb.mode=disabled', '--override', 'resources.threads=1',
               '--override', f'experiment.results_dir={root/"runs"}', '--override', 'experiment.name=tiny', cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root/'runs'/'tiny'


def test_report_from_a_copied_checkpoint_in_a_clean_folder(trained, tmp_path):
    ckpt = tmp_path/'best.pth'
    shutil.copy(trained/'checkpoints'/'best.pth', ckpt)
    r = run_ae('ae_report', '--checkpoint', str(ckpt), '--output', str(tmp_path/'again'), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    import json
    new = json.loads((tmp_path/'again'/'report'/'metrics.json').read_text())
    old = json.loads((trained/'report'/'metrics.json').read_text())
    assert new['test']['mse'] == pytest.approx(old['test']['mse'], rel=1e-6)


def test_embed_matches_encode_in_process(trained, tmp_path):
    from ae_nb.report import load_model
    from ae_nb.data import normalize
    x = np.random.default_rng(0).random((10, 1, 16, 16), dtype=np.float32)
    np.save(tmp_path/'part1.npy', x[:6])
    np.save(tmp_path/'part2.npy', x[6:])
    out = tmp_path/'out'/'codes.npy'
    r = run_ae('ae_embed', '--checkpoint', str(trained/'checkpoints'/'final_checkpoint.pth'),
               '--input', str(tmp_path/'part*.npy'), '--output', str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    codes = np.load(out, allow_pickle=False)
    model, _, norm = load_model(trained/'checkpoints'/'final_checkpoint.pth')
    with torch.no_grad(): expected = model.encode(torch.as_tensor(normalize(x, norm))).numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)
    rows = list(csv.DictReader(open(out.with_suffix('.csv'))))
    assert [(Path(r['file']).name, int(r['position'])) for r in rows][5:7] == [('part1.npy', 5), ('part2.npy', 0)]


def test_score_flags_against_the_stored_threshold(trained, tmp_path):
    from ae_nb.data import synthetic_images
    normal = synthetic_images(4, 1, 16, 16, seed=123)
    broken = 3 * np.random.default_rng(1).random((4, 1, 16, 16), dtype=np.float32)  # saturated sensor noise
    np.save(tmp_path/'new.npy', np.concatenate([normal, broken]))
    r = run_ae('ae_score', '--checkpoint', str(trained/'checkpoints'/'best.pth'), '--input', str(tmp_path),
               '--output', str(tmp_path/'scores.csv'), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = list(csv.DictReader(open(tmp_path/'scores.csv')))
    assert len(rows) == 8 and all(r['flagged'] in ('0', '1') for r in rows)
    assert all(float(r['mse']) >= 0 for r in rows)
    mse = [float(r['mse']) for r in rows]
    assert max(mse[:4]) < min(mse[4:])  # noise far outside the training range scores worst...
    assert [r['flagged'] for r in rows[4:]] == ['1'] * 4  # ...and is flagged


@pytest.mark.parametrize('damage', ['missing', 'truncated', 'wrong_shape'])
def test_bad_checkpoint_or_mismatched_data_is_one_clear_line(trained, tmp_path, damage):
    ckpt = tmp_path/'model.pth'
    np.save(tmp_path/'data.npy', np.zeros((2, 1, 16, 16), np.float32))
    if damage == 'truncated': ckpt.write_bytes((trained/'checkpoints'/'best.pth').read_bytes()[:5000])
    if damage == 'wrong_shape':
        shutil.copy(trained/'checkpoints'/'best.pth', ckpt)
        np.save(tmp_path/'data.npy', np.zeros((2, 1, 8, 8), np.float32))
    r = run_ae('ae_embed', '--checkpoint', str(ckpt), '--input', str(tmp_path/'data.npy'), '--output', str(tmp_path/'c.npy'), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith('error: ') and 'Traceback' not in r.stderr, r.stderr
    assert ('model.pth' if damage != 'wrong_shape' else 'data.npy: samples of shape 1x8x8') in r.stderr
    assert not (tmp_path/'c.npy').exists()


def test_inputs_unlike_the_training_data_are_a_warning_on_stderr(trained, tmp_path):
    "Synthetic training images span 0 to 1; inputs of 0 to 255 are scored, with a warning naming both ranges on stderr."
    from ae_nb.data import synthetic_images
    ckpt = str(trained/'checkpoints'/'best.pth')
    np.save(tmp_path/'normal.npy', synthetic_images(4, 1, 16, 16, seed=7))
    np.save(tmp_path/'bytes.npy', synthetic_images(4, 1, 16, 16, seed=7) * 255)
    ok = run_ae('ae_score', '--checkpoint', ckpt, '--input', str(tmp_path/'normal.npy'), '--output', str(tmp_path/'s.csv'),
                cwd=tmp_path)
    assert ok.returncode == 0 and 'WARNING' not in ok.stderr + ok.stdout, ok.stderr
    for tool, out in (('ae_score', 'scores.csv'), ('ae_embed', 'codes.npy')):
        far = run_ae(tool, '--checkpoint', ckpt, '--input', str(tmp_path/'bytes.npy'), '--output', str(tmp_path/out), cwd=tmp_path)
        assert far.returncode == 0 and 'Traceback' not in far.stderr, far.stderr
        assert 'WARNING' in far.stderr and 'inputs 0 to 255, training data 0 to 1' in far.stderr, far.stderr
        assert 'WARNING' not in far.stdout


def bad_inputs(folder):
    "Inputs the data chapter refuses, each with the flag a tool's message must name and the setting it must not."
    folder.mkdir()
    np.save(folder/'cube.npy', np.zeros((3, 16, 16), np.float32))           # CHW or NHW?
    np.savez(folder/'two.npz', a=np.zeros((2, 16, 16)), b=np.zeros((2, 16, 16)))
    (folder/'garbage.npy').write_bytes(b'\x93NUMPY\x01\x00junk')
    return {'nothing there': (str(folder/'nowhere'/'*.npy'), '--input', 'data.raw_glob'),
            'ambiguous layout': (str(folder/'cube.npy'), '--layout', 'data.layout'),
            'two arrays in an npz': (str(folder/'two.npz'), '--npz-key', 'data.npz_key'),
            'unreadable file': (str(folder/'garbage.npy'), '--skip-bad-files', 'data.skip_bad_files')}


def test_ae_score_on_a_missing_input_names_input(trained, tmp_path):
    r = run_ae('ae_score', '--checkpoint', str(trained/'checkpoints'/'best.pth'), '--input', str(tmp_path/'nonexistent'),
               '--output', str(tmp_path/'out.csv'), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith('error: --input ') and 'Traceback' not in r.stderr, r.stderr
    assert 'data.raw_glob' not in r.stderr and not (tmp_path/'out.csv').exists(), r.stderr


@pytest.mark.parametrize('tool,case', [('ae_score', 'nothing there'), ('ae_embed', 'ambiguous layout'),
                                       ('ae_score', 'two arrays in an npz'), ('ae_embed', 'unreadable file')])
def test_tool_errors_name_the_tools_flags_not_config_keys(trained, tmp_path, capsys, tool, case):
    "The tools' entry points in-process (the subprocess above shows the console script gives the same)."
    from ae_nb.cli import embed_main, score_main
    where, flag, key = bad_inputs(tmp_path/'in')[case]
    with pytest.raises(SystemExit) as e:
        {'ae_embed': embed_main, 'ae_score': score_main}[tool](
            ['--checkpoint', str(trained/'checkpoints'/'best.pth'), '--input', where, '--output', str(tmp_path/'out.csv')])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith('error: ') and 'Traceback' not in err, err
    assert flag in err and key not in err, err
