"The report from a checkpoint alone, in a clean folder; bad checkpoints give clear errors."
import json, math, shutil

import numpy as np
import pytest
import torch

from ae_nb.config import validate_configuration
from ae_nb.data import create_filtered_split_datasets, denormalize, load_or_create_datasets, make_loaders
from ae_nb.model import model_from_config
from ae_nb.report import encode_array, generate_full_report, load_model, report_from_checkpoint
from ae_nb.trainer import CheckpointError, TrainerAE


def tiny_config(results_dir, **data):
    return validate_configuration({
        'experiment': {'results_dir': str(results_dir), 'name': 'tiny', 'seed': 3},
        'data': {'source': 'synthetic', 'synthetic': {'n_samples': 200, 'height': 12, 'width': 20, **data}, 'batch_size': 32},
        'model': {'channels': [4, 8], 'strides': [[1, 2], 2], 'embedding_dim': 4},
        'training': {'epochs': 2, 'plot_every': 0, 'checkpoint': {'save_every': 0}},
        'resources': {'device': 'cpu'}, 'logging': {'progress': 'never', 'wandb': {'mode': 'disabled'}}})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A two-epoch run on small synthetic data: (config, splits, trainer, in-process report results)."
    root = tmp_path_factory.mktemp('run')
    config = tiny_config(root/'results')
    splits = load_or_create_datasets(config, log=lambda *a: None)
    train_loader, val_loader, _ = make_loaders(splits, config)
    torch.manual_seed(0)
    model = model_from_config(config.model, splits.sample_shape)
    trainer = TrainerAE(model, config, train_loader, val_loader, norm=splits.norm, data_fingerprint=splits.fingerprint, log=lambda *a: None)
    trainer.train(); trainer.cleanup()
    results = generate_full_report(model, splits, config, history=trainer.history, run_dir=trainer.run_dir,
                                   checkpoint=trainer.checkpoint_dir/'best.pth', log=lambda *a: None)
    return config, splits, trainer, results


def test_report_from_checkpoint_alone_in_a_clean_folder(trained, tmp_path, monkeypatch):
    config, splits, trainer, results = trained
    moved = tmp_path/'elsewhere'/'checkpoints'/'best.pth'
    moved.parent.mkdir(parents=True)
    shutil.copy(trainer.checkpoint_dir/'best.pth', moved)
    shutil.rmtree(config.experiment.results_dir + '/cache')  # the data must be prepared again from the stored config
    monkeypatch.chdir(tmp_path)
    again = report_from_checkpoint(moved, log=lambda *a: None)
    saved = json.loads((tmp_path/'elsewhere'/'report'/'metrics.json').read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert saved['checkpoint'] == str(moved)
    assert saved['data_fingerprint'] == splits.fingerprint
    assert saved['test']['mse'] == pytest.approx(results['test']['mse'], rel=1e-9)
    assert saved['pca']['mse'] == pytest.approx(results['pca']['mse'], rel=1e-9)
    assert again['ae_vs_pca_mse_ratio'] == pytest.approx(results['ae_vs_pca_mse_ratio'], rel=1e-9)
    md = (tmp_path/'elsewhere'/'report'/'report.md').read_text()
    for fig in saved['figures'].values():
        assert f"]({fig})" in md and (tmp_path/'elsewhere'/'report'/fig).stat().st_size > 1000


def test_embeddings_of_raw_input_match_encode(trained):
    config, splits, trainer, _ = trained
    model, stored, norm = load_model(trainer.checkpoint_dir/'final_checkpoint.pth')
    assert stored == config and norm == splits.norm
    x = np.array(splits.test.x[:17])
    codes = encode_array(model, denormalize(x, norm), norm, batch_size=5)
    trainer.model.eval()
    with torch.no_grad(): expected = trainer.model.encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-5)


def test_bad_checkpoints_are_named(trained, tmp_path):
    _, _, trainer, _ = trained
    with pytest.raises(CheckpointError, match='checkpoint not found'): load_model(tmp_path/'nope.pth')
    flipped = tmp_path/'flipped.pth'
    data = bytearray((trainer.checkpoint_dir/'best.pth').read_bytes()); data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(flipped)): load_model(flipped)
    foreign = tmp_path/'foreign.pth'
    torch.save({'weights': torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match='not an ae_nb checkpoint'): load_model(foreign)


def test_checkpoint_for_another_shape_is_refused(trained, tmp_path):
    _, _, trainer, _ = trained
    other = tiny_config(tmp_path/'results', height=16, width=16)
    splits = create_filtered_split_datasets(other, log=lambda *a: None)
    model, _, _ = load_model(trainer.checkpoint_dir/'best.pth')
    with pytest.raises(ValueError, match=r'built for samples of shape \(1, 12, 20\) but the data has samples of shape \(1, 16, 16\)'):
        generate_full_report(model, splits, other, run_dir=tmp_path/'r', log=lambda *a: None)
    with pytest.raises(ValueError, match='best.pth was built for samples of shape'):
        generate_full_report(model_from_config(other.model, splits.sample_shape), splits, other, run_dir=tmp_path/'r',
                             checkpoint=trainer.checkpoint_dir/'best.pth', log=lambda *a: None)


def test_the_report_has_ssim_per_sample_and_overall(trained):
    "SSIM, in [-1, 1] and equal to the mean of its per-sample column, for the autoencoder and the PCA baseline."
    import csv
    config, splits, trainer, results = trained
    report = trainer.run_dir/'report'
    saved = json.loads((report/'metrics.json').read_text())
    for who in ('test', 'pca'): assert -1 <= saved[who]['ssim'] <= 1, saved[who]
    rows = list(csv.DictReader(open(report/'per_sample_test.csv')))
    assert len(rows) == len(splits.test)
    assert np.mean([float(r['ssim']) for r in rows]) == pytest.approx(saved['test']['ssim'], abs=1e-4)
    assert '| SSIM |' in (report/'report.md').read_text()


REPORT_FILES = ['loss_curves.png', 'best_worst.png', 'error_histogram.png', 'embedding_map.png', 'per_sample_test.csv',
                'metrics.json', 'report.md']


@pytest.mark.parametrize('name', REPORT_FILES)
def test_a_full_disk_while_writing_the_report_names_the_file(trained, tmp_path, monkeypatch, name):
    "ENOSPC when a report file is put in place: the error names that file, and no temporary file is left."
    import errno, os
    config, splits, trainer, _ = trained
    real_replace = os.replace
    def full(src, dst):
        if os.path.basename(dst) == name: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', full)
    with pytest.raises(OSError) as e:
        generate_full_report(trainer.model, splits, config, history=trainer.history, run_dir=tmp_path,
                             checkpoint=trainer.checkpoint_dir/'best.pth', log=lambda *a: None)
    assert e.value.errno == errno.ENOSPC
    assert str(tmp_path/'report'/name) in str(e.value) and 'No space left on device' in str(e.value)
    left = sorted(p.name for p in (tmp_path/'report').iterdir())
    assert not [n for n in left if n.startswith('.') or n.endswith('.tmp')], left
    assert name not in left


def test_a_figure_that_fails_half_written_leaves_no_file(trained, tmp_path, monkeypatch):
    import errno
    from matplotlib.figure import Figure
    config, splits, trainer, _ = trained
    real_savefig = Figure.savefig
    def half(self, fname, **kw):
        if 'error_histogram' in str(fname):
            open(fname, 'wb').write(b'\x89PNG half')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_savefig(self, fname, **kw)
    monkeypatch.setattr(Figure, 'savefig', half)
    with pytest.raises(OSError, match=r'cannot write .*error_histogram\.png: No space left on device'):
        generate_full_report(trainer.model, splits, config, history=trainer.history, run_dir=tmp_path, log=lambda *a: None)
    assert sorted(p.name for p in (tmp_path/'report').iterdir()) == ['best_worst.png', 'loss_curves.png']


def test_the_report_names_the_epoch_of_the_checkpoint_it_evaluates(trained, tmp_path):
    "After a crash the history can run past best.pth: the report names best.pth's epoch and loss, and warns."
    from ae_nb.trainer import load_checkpoint
    config, splits, trainer, _ = trained
    best = trainer.checkpoint_dir/'best.pth'
    ckpt = load_checkpoint(best)
    later = {k: list(v) for k, v in trainer.history.items()}
    for k, v in (('epoch', later['epoch'][-1] + 1), ('train_loss', later['train_loss'][-1] * .9),
                 ('val_loss', min(later['val_loss']) * .5), ('lr', later['lr'][-1]), ('time', 0.1)): later[k].append(v)
    assert later['epoch'][-1] > ckpt['epoch']
    lines = []
    results = generate_full_report(trainer.model, splits, config, history=later, run_dir=tmp_path, checkpoint=best, log=lines.append)
    t = results['training']
    assert t['best_epoch'] == ckpt['epoch']
    own = ckpt['history']['val_loss'][ckpt['history']['epoch'].index(ckpt['epoch'])]
    assert (t['best_epoch'], t['checkpoint_epoch'], t['epochs']) == (ckpt['epoch'], ckpt['epoch'], later['epoch'][-1])
    assert t['best_val_loss'] == pytest.approx(own) and t['checkpoint_val_loss'] == pytest.approx(own)
    warning = [l for l in lines if 'WARNING' in l]
    assert len(warning) == 1 and f"best epoch is {later['epoch'][-1]}" in warning[0] and f"holds epoch {ckpt['epoch']}" in warning[0]
    saved = json.loads((tmp_path/'report'/'metrics.json').read_text())
    assert saved['training']['best_epoch'] == ckpt['epoch']
    assert f"`{best}`, epoch {ckpt['epoch']} (val loss {own:.4g})" in (tmp_path/'report'/'report.md').read_text()
    from ae_nb.report import print_final_results
    printed = []
    print_final_results(results, log=printed.append)
    assert any(f"(epoch {ckpt['epoch']})" in l and 'best val loss' in l for l in printed), printed
    quiet = []
    generate_full_report(trainer.model, splits, config, history=trainer.history, run_dir=tmp_path/'agree', checkpoint=best,
                         log=quiet.append)
    assert not [l for l in quiet if 'WARNING' in l]             # history and checkpoint agree: no warning


@pytest.mark.parametrize('val_loss,best', [([.45, math.nan], (0.45, 1)), ([.45, None], (0.45, 1)), ([math.nan, .3], (0.3, 2)),
                                           ([None, math.inf], None)])
def test_loss_curves_mark_the_best_finite_validation_loss(tmp_path, val_loss, best):
    "A missing or diverged validation loss is a gap in the curve; the best epoch is found among the others."
    from ae_nb.report import plot_loss_curves
    fig = plot_loss_curves({'epoch': [1, 2], 'train_loss': [.5, .4], 'val_loss': val_loss}, path=tmp_path/'loss.png')
    ax = fig.axes[0]
    marked = [t.get_text() for t in ax.get_legend().get_texts() if t.get_text().startswith('best val')]
    assert marked == ([] if best is None else [f"best val {best[0]:.3g} (epoch {best[1]})"])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ('epoch', 'loss') and (tmp_path/'loss.png').stat().st_size > 1000


def test_the_comparison_with_pca_reads_as_a_percentage_or_a_factor(trained, tmp_path):
    "0.958 is '4 % lower error', not '1.0x lower'; from a factor of 2 on, the factor reads better."
    from ae_nb.report import print_final_results, report_markdown
    _, _, _, results = trained
    metrics = json.loads(open(results['metrics']).read())
    for ratio, words in [(0.958, '4 % lower error than PCA'), (0.45, '2.2x lower error than PCA'),
                         (1.3, '30 % higher error than PCA'), (1.0004, 'about the same error as PCA')]:
        printed = []
        print_final_results(results | {'ae_vs_pca_mse_ratio': ratio}, log=printed.append)
        assert f"autoencoder / PCA test MSE: {ratio:.3f} ({words})" in printed, printed
        assert f"The autoencoder has **{words}** with" in report_markdown(metrics | {'ae_vs_pca_mse_ratio': ratio})
