"Notebook widgets driven without a browser: set values, click buttons, feed training history."
import json, os, re, shlex, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

import ae_nb
from ae_nb.config import AEConfig, ConfigError, apply_config_overrides, load_config, schema_keys, validate_configuration
from ae_nb.config import THREADS_PER_CORE
from ae_nb.data import ArrayDataset, synthetic_images
from ae_nb.model import tiny_autoencoder
from ae_nb.widgets import ConfigEditor, ReconstructionExplorer, RunsBrowser, TrainingMonitor, field_kind, reconstruct

LEAF_KEYS = [k for k in schema_keys() if not any(o.startswith(k + '.') for o in schema_keys())]


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py


def test_import_needs_no_ipywidgets_and_no_other_module_imports_it():
    out = subprocess.run([sys.executable, '-c', "import sys, ae_nb.widgets, ae_nb.cli; print('ipywidgets' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
    package = Path(ae_nb.__file__).parent
    imports = re.compile(r'^\s*(import|from)\s+ipywidgets', re.MULTILINE)
    others = [p.name for p in package.glob('*.py') if p.name != 'widgets.py' and imports.search(p.read_text())]
    assert others == []


def test_editor_has_one_input_per_schema_field_of_the_right_kind():
    editor = ConfigEditor()
    assert list(editor.fields) == LEAF_KEYS
    kinds = {type(editor.fields[k]).__name__ for k in ('data.source', 'logging.level')}
    assert kinds == {'Dropdown'}
    assert type(editor.fields['experiment.deterministic']).__name__ == 'Checkbox'
    assert type(editor.fields['data.batch_size']).__name__ == 'IntText'
    assert type(editor.fields['training.gamma']).__name__ == 'FloatText'
    assert editor.fields['training.grad_clip'].value == ''
    assert editor.fields['logging.wandb.tags'].value == '[]'
    assert 'Peak learning rate' in editor.fields['training.learning_rate'].tooltip
    assert editor.valid and editor.config == AEConfig()


def test_editor_changes_update_the_config_and_errors_show_beside_fields():
    editor = ConfigEditor({'data': {'source': 'synthetic'}})
    assert editor.config.data.source == 'synthetic'
    editor.fields['data.synthetic.height'].value = 16
    editor.fields['training.grad_clip'].value = '1.5'
    editor.fields['resources.threads'].value = '2'
    assert (editor.config.data.synthetic.height, editor.config.training.grad_clip, editor.config.resources.threads) == (16, 1.5, 2)

    editor.fields['data.batch_size'].value = 0
    assert not editor.valid and editor.save_button.disabled and editor.train_button.disabled
    assert 'greater than or equal to 1' in editor.error_labels['data.batch_size'].value
    assert editor.config.data.batch_size == AEConfig().data.batch_size  # last valid config is kept
    assert any(p.startswith('data.batch_size:') for p in editor.problems)
    assert '1 problem' in editor.status.value

    editor.fields['resources.device'].value = 'gpu'                  # a second problem, reported too
    assert len(editor.problems) == 2 and 'expected auto, cpu' in editor.error_labels['resources.device'].value
    editor.fields['data.batch_size'].value = 32
    editor.fields['resources.device'].value = 'cpu'
    assert editor.valid and editor.config.data.batch_size == 32
    assert all(label.value == '' for label in editor.error_labels.values())

    editor.fields['data.filters.value_range'].value = '[0, 1, 2]'    # list too long
    assert 'at most 2' in editor.error_labels['data.filters.value_range'].value
    editor.fields['data.filters.value_range'].value = '{bad'
    assert 'not valid YAML' in editor.error_labels['data.filters.value_range'].value
    editor.fields['data.filters.value_range'].value = ''
    assert editor.valid and editor.config.data.filters.value_range is None


def test_editor_buttons(tmp_path):
    calls = []
    editor = ConfigEditor(on_train=lambda cfg: calls.append(cfg) or 'done', path=tmp_path/'a'/'run.yaml')
    editor.fields['training.epochs'].value = 2
    editor.fields['model.strides'].value = '[[1, 2], 2]'
    editor.fields['experiment.name'].value = 'my run'                # invalid: buttons do nothing
    for button in (editor.save_button, editor.train_button): button.click()
    assert calls == [] and not (tmp_path/'a'/'run.yaml').exists()
    editor.fields['experiment.name'].value = 'my-run'

    editor.save_button.click()
    assert validate_configuration(load_config(tmp_path/'a'/'run.yaml')) == editor.config

    editor.overrides_button.click()
    command = editor.command.value
    assert command == "ae_train --override experiment.name=my-run --override 'model.strides=[[1, 2], 2]' --override training.epochs=2"
    overrides = shlex.split(command)[2::2]
    assert validate_configuration(apply_config_overrides({}, overrides)) == editor.config

    editor.train_button.click()
    assert calls == [editor.config] and editor.result == 'done'


def test_editor_shows_what_stops_the_config_running_here():
    editor = ConfigEditor()
    threads = THREADS_PER_CORE * os.cpu_count() + 1          # the schema alone accepts up to 4096
    editor.fields['resources.threads'].value = str(threads)
    assert not editor.valid and editor.train_button.disabled
    assert any(p.startswith('resources.threads:') for p in editor.problems)
    assert f'{threads} threads on a machine with' in editor.error_labels['resources.threads'].value
    editor.fields['resources.threads'].value = ''
    assert editor.valid

    editor.fields['data.source'].value = 'synthetic'                  # 8x8 samples, a 15x15 kernel
    editor.fields['data.synthetic.height'].value = 8
    editor.fields['data.synthetic.width'].value = 8
    editor.fields['model.kernel_size'].value = 15
    assert not editor.valid
    assert '15 is too large for 8x8 samples' in editor.error_labels['model.kernel_size'].value
    editor.fields['model.kernel_size'].value = 3
    assert editor.valid and editor.config.model.kernel_size == 3


def test_editor_from_file_and_bad_start(tmp_path):
    path = tmp_path/'c.yaml'
    path.write_text("training:\n  epochs: 7\n")
    editor = ConfigEditor(path)
    assert editor.config.training.epochs == 7 and editor.fields['training.epochs'].value == 7
    assert ConfigEditor().train() is None                              # no callback: a message, no error
    with pytest.raises(ConfigError, match='training.epochs'): ConfigEditor({'training': {'epochs': 'ten'}})


def test_field_kinds_cover_the_schema():
    editor = ConfigEditor()
    assert {field_kind(editor._field(k).annotation) for k in LEAF_KEYS} == {
        'choice', 'switch', 'bool', 'int', 'float', 'str', 'optional_str', 'yaml'}


HISTORY = {'epoch': [1, 2, 3], 'train_loss': [0.5, 0.3, 0.2], 'val_loss': [0.6, 0.4, 0.35], 'lr': [1e-3, 8e-4, 5e-4], 'time': [0.1, 0.2, 0.3]}


def test_monitor_spends_a_bounded_share_of_time_drawing():
    monitor = TrainingMonitor(min_interval=0, max_overhead=0.05)
    x = torch.rand(16, 1, 16, 16, requires_grad=True)
    start = time.perf_counter()
    while time.perf_counter() - start < 1.5: monitor.update(HISTORY, x, x * 2)
    elapsed = time.perf_counter() - start
    assert monitor.n_renders >= 1 and monitor.n_updates > 10 * monitor.n_renders
    assert monitor.render_seconds <= 0.05 * elapsed + monitor.last_render_seconds + 0.01
    assert monitor.curves.value[:4] == b'\x89PNG' and monitor.images.value[:4] == b'\x89PNG'
    assert 'epoch <b>3</b>' in monitor.status.value and 'best val <b>0.35</b>' in monitor.status.value


def test_monitor_keeps_a_copy_of_the_images():
    monitor = TrainingMonitor(min_interval=3600, n_images=2)
    batch = torch.zeros(4, 1, 8, 8)
    monitor.update(HISTORY, batch, batch)
    batch.fill_(1)                                                       # the loader reuses its buffer
    assert monitor.inputs.shape == (2, 1, 8, 8) and float(monitor.inputs.sum()) == 0


def test_monitor_without_validation_or_images():
    monitor = TrainingMonitor()
    assert monitor.update({'epoch': [], 'train_loss': []}) is True      # nothing to draw yet, no error
    assert monitor.curves.value == b''
    monitor.update({'epoch': [1], 'train_loss': [0.5], 'val_loss': [None], 'lr': [0.1]}, force=True)
    assert 'val' not in monitor.status.value and monitor.curves.value[:4] == b'\x89PNG'
    assert monitor.images.value == b''


def test_monitor_shows_no_empty_pictures_before_the_first_epoch():
    monitor = TrainingMonitor(min_interval=0)
    assert 'waiting for the first epoch' in monitor.status.value
    # an Image widget without a value is drawn as a broken-image icon: hidden until it has a picture
    assert (monitor.curves.layout.display, monitor.images.layout.display) == ('none', 'none')
    monitor.update({'epoch': [1], 'train_loss': [0.5]}, force=True)  # curves, but no images yet
    assert monitor.curves.value[:4] == b'\x89PNG' and monitor.curves.layout.display != 'none'
    assert monitor.images.layout.display == 'none'
    monitor.update(HISTORY, torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), force=True)
    assert monitor.images.value[:4] == b'\x89PNG' and monitor.images.layout.display != 'none'


def test_explorer_says_when_a_typed_index_is_out_of_range():
    x = synthetic_images(10, height=8, width=8, seed=2)
    explorer = ReconstructionExplorer(tiny_autoencoder((1, 8, 8)), x)
    # a bounded box is clamped by the browser before Python sees it, so it could never say so
    assert getattr(explorer.jump, 'max', None) is None
    explorer.jump.value = 99999
    assert explorer.index == 9 and explorer.jump.value == 9
    assert 'index 99999 is past the last sample (9); showing 9' in explorer.info.value
    explorer.jump.value = 12345                                  # the last one is on screen already
    assert explorer.index == 9 and 'index 12345 is past the last sample (9)' in explorer.info.value
    explorer.jump.value = 4
    assert explorer.index == 4 and 'past the last' not in explorer.info.value
    explorer.jump.value = -3
    assert explorer.index == 0
    assert 'index -3 is before the first sample (0); showing 0' in explorer.info.value
    with pytest.raises(ValueError, match='index 10 is not a sample'): explorer.show(10)


def test_explorer_keeps_the_sample_on_screen_when_the_order_changes():
    x = synthetic_images(30, height=8, width=8, seed=3)
    explorer = ReconstructionExplorer(tiny_autoencoder((1, 8, 8)), x)
    explorer.slider.value = 5
    explorer.sort_by_error.value = True
    position = int(np.flatnonzero(explorer.order == 5)[0])
    assert explorer.index == 5 and explorer.slider.value == position
    assert f'sample 5 is at position {position} of 30, worst first' in explorer.info.value
    explorer.slider.value = 0
    assert explorer.index == int(np.argmax(explorer.errors))
    assert 'worst first' not in explorer.info.value
    shown = explorer.index
    explorer.sort_by_error.value = False
    assert explorer.index == explorer.slider.value == shown
    assert f'sample {shown} is at position {shown} of 30, in their own order' in explorer.info.value
    assert ReconstructionExplorer(tiny_autoencoder((1, 8, 8)), x, sort_by_error=True).index == \
        int(np.argmax(explorer.errors))


def test_explorer_on_a_dataset():
    x = synthetic_images(40, height=16, width=16, seed=1)
    x[7] = 1 - x[7] ** 0.2                                               # an odd sample
    model = tiny_autoencoder((1, 16, 16), embedding_dim=3)
    dataset = ArrayDataset(x, labels=np.arange(40) % 3)
    explorer = ReconstructionExplorer(model, dataset, batch_size=16)
    assert explorer.outputs.shape == x.shape and explorer.latents.shape == (40, 3) and explorer.projection.shape == (40, 2)
    ref = reconstruct(model, torch.from_numpy(x))
    np.testing.assert_allclose(explorer.errors, ref['errors'], rtol=1e-5)
    explorer.slider.value = 12
    assert explorer.index == 12 and 'sample <b>12</b> &middot; label <b>0</b>' in explorer.info.value
    explorer.sort_by_error.value = True                          # the same sample stays on screen
    assert explorer.index == 12
    assert explorer.slider.value == int(np.flatnonzero(explorer.order == 12)[0])
    explorer.slider.value = 0
    assert explorer.index == int(np.argmax(explorer.errors))
    assert np.all(np.diff(explorer.errors[explorer.order]) <= 0)
    assert explorer.sample_image.value[:4] == b'\x89PNG' and explorer.latent_image.value[:4] == b'\x89PNG'
    explorer.show(7)                                                     # jump by index, in sorted order too
    assert explorer.index == 7 and explorer.jump.value == 7
    explorer.jump.value = 30
    assert explorer.index == 30 and explorer.slider.value == int(np.flatnonzero(explorer.order == 30)[0])
    distances = ((explorer.latents - explorer.latents[30]) ** 2).sum(1)
    assert set(explorer.neighbours(30, k=4)) == set(np.argsort(distances)[1:5])


def test_explorer_reads_memory_maps_and_names_bad_input(tmp_path):
    np.save(tmp_path/'x.npy', synthetic_images(10, height=8, width=8))
    x = np.load(tmp_path/'x.npy', mmap_mode='r', allow_pickle=False)
    explorer = ReconstructionExplorer(tiny_autoencoder((1, 8, 8)), x)
    assert len(explorer.errors) == 10 and explorer.labels is None
    plain = ReconstructionExplorer(torch.nn.Sequential(torch.nn.Identity()), x)  # no encode: no latent view, no neighbours
    assert plain.projection is None and len(plain.neighbours(0)) == 0 and 'nearest' not in plain.info.value
    with pytest.raises(ValueError, match=r'x must be samples \(N, C, H, W\)'): ReconstructionExplorer(tiny_autoencoder((1, 8, 8)), x[0])
    with pytest.raises(ValueError, match='x has no samples'): ReconstructionExplorer(tiny_autoencoder((1, 8, 8)), x[:0])


def _png_bytes(seed, size=8):
    "A small PNG, different for every seed."
    import io
    from PIL import Image
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='png')
    return buffer.getvalue()


REPORT_FIGURES = ['best_worst', 'loss_curves', 'error_histogram', 'embedding_map']


def _write_run(root, name, dim, mse=None, pca_mse=0.02, channels=(8, 16)):
    "A run folder as ae_nb leaves it: finished with a report when `mse` is given, else plots only."
    run = Path(root)/name
    (run/'plots').mkdir(parents=True, exist_ok=True)
    (run/'config.yaml').write_text(f"experiment: {{name: {name.replace('/', '_')}}}\n"
                                   f"model: {{embedding_dim: {dim}, channels: {list(channels)}}}\n")
    (run/'history.csv').write_text('epoch,train_loss,val_loss\n1,0.05,0.04\n2,0.03,0.03\n3,0.02,\n')
    (run/'plots'/'loss_curves.png').write_bytes(_png_bytes(dim))
    for epoch in (2, 10):
        (run/'plots'/f'reconstructions_e{epoch:04d}.png').write_bytes(_png_bytes(dim + epoch))
    if mse is None: return run
    (run/'report').mkdir(exist_ok=True)
    for i, figure in enumerate(REPORT_FIGURES):
        (run/'report'/f'{figure}.png').write_bytes(_png_bytes(100 * dim + i))
    (run/'checkpoints').mkdir(exist_ok=True)
    (run/'checkpoints'/'final_checkpoint.pth').touch()
    (run/'report'/'metrics.json').write_text(json.dumps({
        'test': {'mse': mse, 'psnr': 20.0, 'ssim': 0.5 + dim / 100},
        'pca': {'mse': pca_mse, 'n_components': dim}, 'ae_vs_pca_mse_ratio': mse / pca_mse,
        'model': {'parameters': 1000 * dim, 'embedding_dim': dim}, 'wall_time_s': 1.5 * dim,
        'training': {'epochs': 3, 'best_val_loss': mse * 0.9, 'best_epoch': 3}}))
    return run


def _table_runs(browser):
    "Run names in the order the table shows them (the first cell of each row after the header)."
    return re.findall(r"<tr[^>]*><td[^>]*>([^<]+)</td>", browser.table.value)


@pytest.fixture
def results(tmp_path):
    "Three finished runs (ratios to PCA 1.5, 0.5, 1.0) and one without a report."
    _write_run(tmp_path, 'small', 2, mse=0.03, channels=(16, 32))
    _write_run(tmp_path, 'large', 8, mse=0.01, channels=(4, 8))
    _write_run(tmp_path, 'medium', 4, mse=0.02, channels=(8, 16))
    _write_run(tmp_path, 'training', 16, channels=(8, 32))
    return tmp_path


def test_browser_sorts_by_any_column(results):
    browser = RunsBrowser(results)                               # ratio to PCA, best first
    order = ['large', 'medium', 'small', 'training']
    assert [r['run'] for r in browser.shown] == _table_runs(browser) == order
    assert list(browser.run.options) == order
    assert list(browser.sort_by.options) == [
        'run', 'state', 'model.embedding_dim', 'model.channels', 'test_mse', 'test_ssim', 'pca_mse',
        'ratio_to_pca', 'best_val_loss', 'epochs', 'wall_time_s']
    browser.sort_by.value = 'test_mse'
    browser.direction.value = 'descending'
    assert _table_runs(browser) == ['small', 'medium', 'large', 'training']  # no value: last
    assert '<b>test_mse</b> &#9660;' in browser.table.value
    assert 'sorted by <b>test_mse</b>, descending' in browser.status.value
    browser.sort_by.value = 'model.embedding_dim'
    assert _table_runs(browser) == ['training', 'large', 'medium', 'small']
    browser.direction.value = 'ascending'
    assert _table_runs(browser) == ['small', 'medium', 'large', 'training']
    assert '<b>model.embedding_dim</b> &#9650;' in browser.table.value
    browser.sort('model.channels', descending=True)          # lists item by item, not as text
    assert _table_runs(browser) == ['small', 'training', 'medium', 'large']
    assert (browser.sort_by.value, browser.direction.value) == ('model.channels', 'descending')
    browser.sort('run')
    assert _table_runs(browser) == sorted(order)
    with pytest.raises(ValueError, match="no column 'mse' in the runs table .* columns: run, "):
        browser.sort('mse')
    with pytest.raises(ValueError, match="no column 'ratio'"): RunsBrowser(results, sort_by='ratio')
    slowest_first = RunsBrowser(results, sort_by='wall_time_s', descending=True)
    assert _table_runs(slowest_first) == ['large', 'medium', 'small', 'training']


def test_browser_shows_the_selected_run_figures_and_metrics(results):
    browser = RunsBrowser(results)
    assert browser.run.value == 'large' and browser.selected['run'] == 'large'  # the best run
    browser.run.value = 'medium'
    assert [box.children[1] for box in browser.figures.children] == [
        browser.images[f] for f in REPORT_FIGURES]
    for figure in REPORT_FIGURES:
        image = browser.images[figure]
        assert image.value == (results/'medium'/'report'/f'{figure}.png').read_bytes()
        assert image.value[:4] == b'\x89PNG' and image.layout.display != 'none'
    details = browser.details.value
    assert '<b>medium</b> &middot; finished' in details
    assert 'model.embedding_dim <b>4</b>' in details and 'model.channels <b>[8, 16]</b>' in details
    assert 'test MSE <b>0.02</b>' in details
    assert 'PCA-4 MSE <b>0.02</b>: about the same error as PCA' in details
    assert '<b>4,000</b> parameters, code size <b>4</b>' in details and '(epoch 3 of 3)' in details
    assert 'wall time <b>6.0</b> s' in details
    assert "font-weight:bold'><td style='padding:1px 10px 1px 0;text-align:left'>medium<" in \
        browser.table.value

    browser.sort_by.value = 'test_ssim'                  # another order: the same run stays shown
    assert browser.run.value == 'medium' and 'test MSE <b>0.02</b>' in browser.details.value

    browser.select('training')                           # no report: training plots, progress
    assert [name for name, image in browser.images.items() if image.value] == [
        'loss_curves', 'reconstructions']
    plots = results/'training'/'plots'
    assert browser.images['loss_curves'].value == (plots/'loss_curves.png').read_bytes()
    assert browser.images['reconstructions'].value == \
        (plots/'reconstructions_e0010.png').read_bytes()        # the latest epoch's
    assert browser.images['best_worst'].value == b''
    assert browser.images['best_worst'].layout.display == 'none'
    assert len(browser.figures.children) == 2
    assert 'no report yet (3 epochs so far, best val loss <b>0.03</b>)' in browser.details.value
    assert 'there is no checkpoint to report on' in browser.details.value
    (results/'training'/'checkpoints').mkdir()
    (results/'training'/'checkpoints'/'best.pth').touch()
    browser.refresh()
    best = results/'training'/'checkpoints'/'best.pth'
    assert f"ae_report --checkpoint {best}" in browser.details.value
    with pytest.raises(ValueError, match="no run 'nope' in .*; runs: "): browser.select('nope')


def test_browser_refresh_picks_up_a_new_run_and_a_new_report(results):
    browser = RunsBrowser(results)
    browser.select('training')
    _write_run(results, 'tiny', 1, mse=0.004)                    # a new run, the best so far
    assert 'tiny' not in _table_runs(browser)                   # not before a refresh
    browser.refresh_button.click()
    assert _table_runs(browser) == ['tiny', 'large', 'medium', 'small', 'training']
    assert browser.run.value == 'training'                      # still on screen
    assert '5 runs in' in browser.status.value
    _write_run(results, 'training', 16, mse=0.05)                # it finished and wrote its report
    browser.refresh_button.click()
    assert _table_runs(browser)[-1] == 'training' and browser.selected['ratio_to_pca'] == 2.5
    report = results/'training'/'report'
    assert browser.images['best_worst'].value == (report/'best_worst.png').read_bytes()
    assert browser.images['reconstructions'].value == b''
    assert '2.5x higher error than PCA' in browser.details.value
    assert '(5 finished)' in browser.status.value


def test_browser_keeps_a_chosen_column_only_while_it_exists(tmp_path):
    _write_run(tmp_path, 'a', 2, mse=0.02)
    _write_run(tmp_path, 'b', 4, mse=0.01)
    browser = RunsBrowser(tmp_path, sort_by='model.embedding_dim', descending=True)
    assert _table_runs(browser) == ['b', 'a']
    for run in ('a', 'b'): (tmp_path/run/'config.yaml').write_text('model: {embedding_dim: 4}\n')
    browser.refresh()                                    # the setting no longer differs: no column
    assert 'model.embedding_dim' not in browser.sort_by.options
    assert browser.sort_by.value == 'ratio_to_pca'
    assert _table_runs(browser) == ['a', 'b']           # descending ratio: 1.0, then 0.5


def test_browser_lists_sweep_trials(tmp_path):
    for trial, dim in [('trial_0000', 2), ('trial_0001', 8)]:
        _write_run(tmp_path/'codes', trial, dim, mse=0.08 / dim)
    browser = RunsBrowser(tmp_path)
    assert _table_runs(browser) == ['codes/trial_0001', 'codes/trial_0000']
    browser.select('codes/trial_0000')
    report = tmp_path/'codes'/'trial_0000'/'report'
    assert browser.images['best_worst'].value == (report/'best_worst.png').read_bytes()


def test_browser_on_an_empty_missing_or_broken_folder(tmp_path):
    empty = RunsBrowser(tmp_path)
    assert f'no runs in <code>{tmp_path}</code> yet' in empty.status.value
    assert (empty.table.value, empty.details.value, empty.figures.children) == ('', '', ())
    assert empty.selected is None and empty.run.layout.display == 'none'
    _write_run(tmp_path, 'first', 4, mse=0.02)
    empty.refresh_button.click()
    assert _table_runs(empty) == ['first'] and empty.run.layout.display is None
    assert empty.images['best_worst'].value[:4] == b'\x89PNG'

    missing = RunsBrowser(tmp_path/'not_yet', sort_by='test_mse')   # no columns to check yet
    assert missing.problem.startswith(f"{tmp_path/'not_yet'} does not exist")
    assert "color:#b00020'>&#10007; " in missing.status.value
    assert 'does not exist' in missing.status.value
    assert missing.table.value == '' and missing.selected is None
    _write_run(tmp_path/'not_yet', 'later', 4, mse=0.02)
    _write_run(tmp_path/'not_yet', 'sooner', 8, mse=0.03)
    missing.refresh()
    assert missing.problem is None and _table_runs(missing) == ['later', 'sooner']
    assert missing.sort_by.value == 'test_mse'

    (tmp_path/'cut_short').mkdir()                  # a broken run file: a sentence, no traceback
    (tmp_path/'cut_short'/'config.yaml').write_text('model: [4,\n')
    empty.refresh()
    assert 'could not read the runs in' in empty.status.value
    assert empty.rows == [] and empty.table.value == ''
