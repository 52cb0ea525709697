"Speed settings in a real `TrainerAE`: device-resident data, channels-last, restart reuse, timing cache, compilation."
import signal

import numpy as np
import pytest
import torch

import ae_nb.performance as performance
from ae_nb.config import validate_configuration
from ae_nb.data import ArrayBatches, synthetic_images
from ae_nb.model import tiny_autoencoder
from ae_nb.trainer import TrainerAE, load_checkpoint, seed_everything


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py


def trainer_for(results_dir, epochs=2, deterministic=True, name='p', **perf):
    "A trainer of a tiny deterministic run (6 steps an epoch) with `resources.performance` set to `perf`."
    cfg = validate_configuration({'experiment': {'name': name, 'results_dir': str(results_dir), 'deterministic': deterministic},
                                  'training': {'epochs': epochs, 'log_every': 2, 'plot_every': 0},
                                  'resources': {'performance': perf},
                                  'logging': {'progress': 'never', 'wandb': {'mode': 'disabled'}}})
    seed_everything(0, deterministic=True)
    x = synthetic_images(128, 1, 16, 16, seed=0)
    return TrainerAE(tiny_autoencoder((1, 16, 16), seed=0), cfg, ArrayBatches(x[:96], 16, shuffle=True, seed=1),
                     ArrayBatches(x[96:], 16), data_fingerprint='fp', log=lambda m: None)


def trained(trainer, restart=None):
    if restart is None: trainer.setup_training(); trainer.train()
    else: trainer.train_with_restart(restart)
    return trainer


def assert_same_run(a, b):
    for k, v in a.model.state_dict().items(): assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.history['train_loss'] == b.history['train_loss'] and a.history['val_loss'] == b.history['val_loss']


def test_batches_gathered_on_the_device_train_exactly_like_host_batches(tmp_path):
    host = trained(trainer_for(tmp_path, name='host'))
    resident = trained(trainer_for(tmp_path, name='resident', data_on_device=True))
    assert host.train_loader.device_x is None and resident.train_loader.device_x is not None
    assert resident.val_loader.device_x is not None
    assert (resident.speedups.data_on_device, resident.speedups.how['data_on_device']) == (True, 'set')
    assert_same_run(host, resident)


def test_channels_last_trains_and_a_restart_reuses_the_checkpoints_settings(tmp_path):
    straight = trained(trainer_for(tmp_path/'a', epochs=2, channels_last=True, fused_optimizer=True))
    assert straight.model.encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    first = trained(trainer_for(tmp_path/'b', epochs=1, channels_last=True, fused_optimizer=True))
    saved = load_checkpoint(first.checkpoint_dir/'latest.pth')['performance']
    assert saved['settings']['channels_last'] is True and saved['how']['channels_last'] == 'set'
    resumed = trained(trainer_for(tmp_path/'b', epochs=2), restart='auto')   # config says auto: the checkpoint decides
    assert (resumed.speedups.channels_last, resumed.speedups.how['channels_last']) == (True, 'checkpoint')
    assert (resumed.speedups.fused_optimizer, resumed.speedups.how['fused_optimizer']) == (True, 'checkpoint')
    assert_same_run(straight, resumed)


def test_a_setting_fixed_in_the_config_wins_over_the_checkpoint(tmp_path):
    trained(trainer_for(tmp_path, epochs=1, channels_last=True))
    resumed = trained(trainer_for(tmp_path, epochs=2, channels_last=False), restart='auto')
    assert (resumed.speedups.channels_last, resumed.speedups.how['channels_last']) == (False, 'set')


def test_timings_are_measured_once_per_setup_then_read_back(tmp_path, monkeypatch):
    calls = []
    real = performance.time_steps
    monkeypatch.setattr(performance, 'time_steps', lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(performance, 'TUNE_MIN_S', 5.0)   # let the tiny run afford timing every candidate
    first = trainer_for(tmp_path, epochs=1, deterministic=False, name='one')
    first.setup_training()
    assert calls and set(first.speedups.how[n] for n in ('channels_last', 'fused_optimizer')) == {'measured'}
    assert len(first.speedups.timings_ms) == 4                       # 2 layouts x 2 optimizers
    assert len(list((tmp_path/'cache'/'tuning').glob('*.json'))) == 1
    calls.clear()
    second = trainer_for(tmp_path, epochs=1, deterministic=False, name='two')
    second.setup_training()
    assert calls == [] and second.speedups.settings() == first.speedups.settings()


def test_tuning_leaves_no_trace_in_the_run(tmp_path, monkeypatch):
    "A run that timed its candidates before training equals one that did not time anything."
    monkeypatch.setattr(performance, 'TUNE_MIN_S', 5.0)
    tuned = trainer_for(tmp_path, epochs=2, deterministic=False, name='tuned', channels_last=False, fused_optimizer=False)
    plain = trainer_for(tmp_path, epochs=2, deterministic=False, name='plain', channels_last=False, fused_optimizer=False, tune=False)
    # only `compile` is auto: the run is too short to try it, but the steps that estimate its length still run
    rng = torch.get_rng_state()
    trained(tuned)
    torch.set_rng_state(rng)
    trained(plain)
    assert_same_run(tuned, plain)


@pytest.mark.skipif(not torch.cuda.is_available() and not __import__('shutil').which('g++'), reason='compiling needs a C++ compiler')
def test_a_compiled_model_compiles_once_not_every_epoch(tmp_path):
    from torch._dynamo.utils import counters
    torch._dynamo.reset(); counters.clear()
    trainer = trainer_for(tmp_path, epochs=3, compile='default')
    graphs = []
    trainer.callbacks.append(lambda t, event: event == 'epoch_end' and graphs.append(counters['stats']['unique_graphs']))
    trained(trainer)
    assert trainer.speedups.compile == 'default' and trainer.eval_model is not trainer.model
    assert graphs[0] > 0 and graphs == [graphs[0]] * 3, graphs   # training and validation graphs made in epoch 1, reused after
    assert np.isfinite(trainer.history['val_loss']).all()


def test_a_restart_in_another_layout_gives_the_optimizer_state_the_new_layout(tmp_path):
    "Fused Adam over channels-last weights with contiguous moments miscomputes silently; the restart must prevent it."
    straight = trained(trainer_for(tmp_path/'a', epochs=2, channels_last=False, fused_optimizer=True))
    trained(trainer_for(tmp_path/'b', epochs=1, channels_last=False, fused_optimizer=True))
    resumed = trainer_for(tmp_path/'b', epochs=2, channels_last=True, fused_optimizer=True)
    resumed.train_with_restart('auto')
    for p in resumed.model.parameters():
        for v in resumed.optimizer.state[p].values():
            if v.shape == p.shape: assert v.stride() == p.stride()
    a, b = straight.history['val_loss'][-1], resumed.history['val_loss'][-1]
    assert abs(a - b) < 0.02 * a, (a, b)   # the same training up to rounding in another layout


def test_checkpoints_written_in_the_background_equal_those_written_inline(tmp_path):
    "The GPU path's background writer (forced here on the CPU) writes the same states, and every file is complete when `train` returns."
    from ae_nb.trainer import CheckpointWriter
    inline = trained(trainer_for(tmp_path, epochs=3, name='inline'))
    background = trainer_for(tmp_path, epochs=3, name='background')
    background._writer = CheckpointWriter(background=True)
    trained(background)
    assert background._writer._pool is not None   # it really ran on the writer thread
    for name in ('latest.pth', 'best.pth', 'final_checkpoint.pth'):
        a, b = (load_checkpoint(t.checkpoint_dir/name) for t in (inline, background))
        assert a['epoch'] == b['epoch'] == 3
        assert {k: v for k, v in a['history'].items() if k != 'time'} == {k: v for k, v in b['history'].items() if k != 'time'}
        for k, v in a['model'].items(): assert torch.equal(v, b['model'][k]), (name, k)
        for k, v in a['optimizer']['state'].items(): assert torch.equal(v['exp_avg'], b['optimizer']['state'][k]['exp_avg'])
    background.cleanup()


def test_a_failed_background_write_stops_training_with_the_error(tmp_path, monkeypatch):
    import errno, os
    from ae_nb.trainer import CheckpointWriter, TrainingError
    trainer = trainer_for(tmp_path, epochs=3)
    trainer._writer = CheckpointWriter(background=True)
    real, latest_writes = os.replace, []
    def full_disk(src, dst):   # the disk fills up after the first latest.pth
        if str(dst).endswith('latest.pth') and (latest_writes.append(dst) or len(latest_writes) > 1):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)
    monkeypatch.setattr('ae_nb.trainer.os.replace', full_disk)
    with pytest.raises(OSError, match=r'could not write .*latest.pth \(No space left on device\)'):
        trained(trainer)
    assert load_checkpoint(trainer.checkpoint_dir/'latest.pth')['epoch'] == 1   # the last good one stays
    assert not list(trainer.checkpoint_dir.glob('.*.tmp'))


class StopAt:
    "The wrapped loader, asking its trainer to stop (SIGTERM) when batch `step` of epoch `epoch` is handed out."
    def __init__(self, loader, epoch, step): self.loader, self.epoch, self.step, self.trainer = loader, epoch, step, None
    def __len__(self): return len(self.loader)
    def __getattr__(self, name): return getattr(self.loader, name)   # `to_device`, `x`, `device_x` included
    def iter_epoch(self, epoch, start=0):
        for i, b in enumerate(self.loader.iter_epoch(epoch, start), start):
            if (epoch, i) == (self.epoch, self.step): self.trainer.request_stop(signal.SIGTERM)
            yield b


def test_the_fast_path_resumes_mid_epoch_exactly(tmp_path):
    "Device-resident batches, channels-last and the fused optimizer: stopped mid-epoch and resumed equals uninterrupted."
    from ae_nb.trainer import TrainingInterrupted
    fast = dict(data_on_device=True, channels_last=True, fused_optimizer=True)
    straight = trained(trainer_for(tmp_path/'a', epochs=3, **fast))
    stopped = trainer_for(tmp_path/'b', epochs=3, **fast)
    stopped.train_loader = StopAt(stopped.train_loader, 1, 4); stopped.train_loader.trainer = stopped
    stopped.setup_training()
    assert stopped.train_loader.device_x is not None
    with pytest.raises(TrainingInterrupted): stopped.train()
    assert stopped.position == (1, 4, 10)
    stopped.save_checkpoint('emergency')
    resumed = trainer_for(tmp_path/'b', epochs=3, data_on_device=True)   # the rest is `auto`: taken from the checkpoint
    resumed.train_with_restart('auto')
    assert resumed.resumed_from.name == 'emergency.pth'
    assert (resumed.speedups.channels_last, resumed.speedups.fused_optimizer) == (True, True)
    assert_same_run(straight, resumed)


@pytest.mark.skipif(not torch.cuda.is_available() and not __import__('shutil').which('g++'), reason='compiling needs a C++ compiler')
def test_cuda_graph_mode_marks_every_step(tmp_path, monkeypatch):
    "With `compile: reduce-overhead` each training and validation step tells CUDA graphs it begins (on a CPU they are skipped)."
    marks = []
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    trainer = trained(trainer_for(tmp_path, epochs=1, compile='reduce-overhead'))
    assert trainer.speedups.compile == 'reduce-overhead'
    assert len(marks) == len(trainer.train_loader) + len(trainer.val_loader)
    assert np.isfinite(trainer.history['val_loss']).all()
