"Notebook widgets driven without a browser: set values, click buttons, feed training history."
import os, re, shlex, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

import ae_nb
from ae_nb.config import AEConfig, ConfigError, apply_config_overrides, load_config, schema_keys, validate_configuration
from ae_nb.config import THREADS_PER_CORE
from ae_nb.data import ArrayDataset, synthetic_images
from ae_nb.model import tiny_autoencoder
from ae_nb.widgets import ConfigEditor, ReconstructionExplorer, TrainingMonitor, field_kind, reconstruct

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
