"A checkpoint applies its source's whole raw-to-model transform, and says when inputs are unlike its training data."
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ae_nb.config import validate_configuration
from ae_nb.data import DIGITS_MAX, load_or_create_datasets, make_loaders, normalize
from ae_nb.model import model_from_config
from ae_nb.report import anomaly_scores, embed_files, encode_array, generate_full_report, load_model, score_files
from ae_nb.trainer import TrainerAE, load_checkpoint, save_checkpoint_file

from conftest import run_ae

quiet = lambda *a: None


def digits_config(results_dir, **data):
    return validate_configuration({
        'experiment': {'results_dir': str(results_dir), 'name': 'digits'},
        'data': data, 'training': {'epochs': 3, 'plot_every': 0, 'checkpoint': {'save_every': 0}},
        'resources': {'device': 'cpu', 'threads': 1}, 'logging': {'progress': 'never', 'wandb': {'mode': 'disabled'}}})


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
    "The default digits model, 3 epochs, with its report: (splits, best checkpoint, report metrics)."
    root = tmp_path_factory.mktemp('digits')
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = digits_config(root/'results')
        splits = load_or_create_datasets(config, log=quiet)
        train, val, _ = make_loaders(splits, config)
        torch.manual_seed(0)
        model = model_from_config(config.model, splits.sample_shape)
        trainer = TrainerAE(model, config, train, val, norm=splits.norm, data_fingerprint=splits.fingerprint, log=quiet)
        trainer.train(); trainer.cleanup()
        best = trainer.checkpoint_dir/'best.pth'
        results = generate_full_report(model, splits, config, history=trainer.history, run_dir=trainer.run_dir,
                                       checkpoint=best, log=quiet)
    finally: torch.set_num_threads(before)
    return splits, best, results


def raw_test_digits(splits):
    "The test split's digits as scikit-learn holds them (0 to 16), shape (N, 1, 8, 8)."
    return load_digits().images[splits.test.index[:, 1], None].astype(np.float32)


def test_stored_norm_maps_raw_digits_to_the_training_samples(digits_run):
    splits, best, _ = digits_run
    _, _, norm = load_model(best)
    assert norm == {'method': 'minmax', 'shift': [0.0], 'scale': [DIGITS_MAX], 'min': [0.0], 'max': [DIGITS_MAX]}
    assert np.array_equal(normalize(raw_test_digits(splits), norm), splits.test.x)   # bit for bit


@pytest.mark.parametrize('method', ['standard', 'none'])
def test_every_method_composes_exactly(tmp_path, method):
    splits = load_or_create_datasets(digits_config(tmp_path, normalize=method), log=quiet)
    assert splits.norm['scale'][0] > 1                          # the /16 is in the stored scale
    assert np.array_equal(normalize(raw_test_digits(splits), splits.norm), splits.test.x)


def test_raw_digits_score_as_normal_and_embed_as_the_prepared_ones(digits_run, tmp_path):
    splits, best, results = digits_run
    np.save(tmp_path/'test_digits.npy', raw_test_digits(splits))
    np.save(tmp_path/'first_33.npy', load_digits().images[:33, None].astype(np.float32))
    warnings = []
    scored = score_files(best, str(tmp_path/'test_digits.npy'), log=warnings.append)
    assert warnings == []
    assert scored['threshold'] == pytest.approx(results['threshold']['value'])
    np.testing.assert_allclose(scored['mse'], results['per_sample']['mse'], rtol=1e-5, atol=1e-9)
    assert int(scored['flagged'].sum()) == results['threshold']['test_above'] < len(splits.test) * 0.05
    first = score_files(best, str(tmp_path/'first_33.npy'), log=warnings.append)
    assert first['flagged'].sum() <= 3 and warnings == []      # 33 ordinary digits: few or none flagged
    codes, _ = embed_files(best, str(tmp_path/'test_digits.npy'), log=warnings.append)
    model, _, _ = load_model(best)
    with torch.no_grad(): expected = model.encode(torch.from_numpy(np.array(splits.test.x))).numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)


def test_inputs_far_outside_the_training_range_get_a_warning(digits_run, tmp_path):
    splits, best, _ = digits_run
    raw = raw_test_digits(splits)
    model, _, norm = load_model(best)
    for fn in (lambda x, warn: encode_array(model, x, norm, warn=warn), lambda x, warn: anomaly_scores(model, x, norm, warn=warn)):
        normal, scaled = [], []
        fn(raw, normal.append); fn(raw * 255, scaled.append)
        assert normal == [] and len(scaled) == 1
        assert 'inputs 0 to 4080, training data 0 to 16' in scaled[0] and 'WARNING' in scaled[0]
    np.save(tmp_path/'scaled.npy', raw * 255)
    lines = []
    score_files(best, str(tmp_path/'scaled.npy'), log=lines.append)
    assert len(lines) == 1 and 'far outside' in lines[0]
    r = run_ae('ae_score', '--checkpoint', str(best), '--input', str(tmp_path/'scaled.npy'), '--output', str(tmp_path/'s.csv'),
               cwd=tmp_path)
    assert r.returncode == 0 and 'inputs 0 to 4080, training data 0 to 16' in r.stderr and 'WARNING' not in r.stdout, r


def test_an_older_checkpoint_without_the_range_still_loads_and_scores(digits_run, tmp_path):
    "Before the stored normalisation was in raw units, a digits checkpoint held shift 0, scale 1 for the data / 16."
    splits, best, _ = digits_run
    old = load_checkpoint(best)
    old['norm'] = {'method': 'minmax', 'shift': [0.0], 'scale': [1.0]}
    save_checkpoint_file(old, tmp_path/'old.pth')
    model, config, norm = load_model(tmp_path/'old.pth')
    assert norm == {'method': 'minmax', 'shift': [0.0], 'scale': [DIGITS_MAX]}
    raw = raw_test_digits(splits)
    current, _, current_norm = load_model(best)
    np.testing.assert_allclose(anomaly_scores(model, raw, norm)['mse'], anomaly_scores(current, raw, current_norm)['mse'], rtol=1e-6)
    warnings = []
    anomaly_scores(model, raw * 255, norm, warn=warnings.append)
    assert warnings == []                                      # no range stored: nothing to compare with
    other = dict(old, norm={'method': 'minmax', 'shift': [0.5], 'scale': [2.0]},
                 config=json.loads(json.dumps(old['config'])) | {'data': {**old['config']['data'], 'source': 'synthetic'}})
    save_checkpoint_file(other, tmp_path/'other.pth')
    assert load_model(tmp_path/'other.pth')[2] == {'method': 'minmax', 'shift': [0.5], 'scale': [2.0]}   # other sources: as stored
