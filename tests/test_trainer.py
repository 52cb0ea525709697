"`TrainerAE` in-process: exact resume, damaged checkpoints, kill -9 while writing, NaN loss, retention, signals, W&B."
import os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from ae_nb.config import validate_configuration
from ae_nb.data import ArrayBatches, synthetic_images
from ae_nb.model import tiny_autoencoder
from ae_nb.trainer import (CheckpointError, RestartError, TrainerAE, TrainingError, TrainingInterrupted,
                           find_restart_checkpoint, load_checkpoint, seed_everything)


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py


def tiny(results_dir, epochs=3, n=96, model_seed=0, data=None, **training):
    "A deterministic tiny run: (config, model, train loader, val loader); 6 steps per epoch."
    cfg = validate_configuration({'data': data or {},
                                  'experiment': {'name': 'tiny', 'results_dir': str(results_dir), 'deterministic': True},
                                  'training': {'epochs': epochs, 'log_every': 2, 'plot_every': 0, **training},
                                  'logging': {'progress': 'never', 'wandb': {'mode': 'disabled'}}})
    seed_everything(0, deterministic=True)
    x = synthetic_images(n + 32, 1, 16, 16, seed=0)
    return (cfg, tiny_autoencoder((1, 16, 16), seed=model_seed),
            ArrayBatches(x[:n], 16, shuffle=True, seed=1), ArrayBatches(x[n:], 16))


class Hook:
    "Loader wrapper that calls `action(trainer, batch)` when it yields batch `step` of epoch `epoch`."
    def __init__(self, loader, epoch, step, action):
        self.loader, self.epoch, self.step, self.action, self.trainer = loader, epoch, step, action, None
    def __len__(self): return len(self.loader)
    def iter_epoch(self, epoch, start=0):
        for i, b in enumerate(self.loader.iter_epoch(epoch, start), start):
            if (epoch, i) == (self.epoch, self.step): b = self.action(self.trainer, b)
            yield b


def hooked_trainer(folder, epoch, step, action, **kw):
    cfg, model, train_dl, val_dl = tiny(folder, **kw)
    hook = Hook(train_dl, epoch, step, action)
    trainer = TrainerAE(model, cfg, hook, val_dl, data_fingerprint='fp', log=lambda m: None)
    hook.trainer = trainer
    trainer.setup_training()
    return trainer


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k


def straight_run(folder, epochs=3, data=None):
    cfg, model, train_dl, val_dl = tiny(folder, epochs=epochs, data=data)
    trainer = TrainerAE(model, cfg, train_dl, val_dl, data_fingerprint='fp', log=lambda m: None)
    trainer.setup_training()
    trainer.train()
    return trainer


def resume_and_compare(folder, straight, expect=None, data=None):
    "Resume the run in `folder` from its emergency checkpoint with a new model; it must end exactly like `straight`."
    cfg, _, train_dl, val_dl = tiny(folder, data=data)
    torch.manual_seed(1234)  # the resumed process starts from other RNG states and another model
    log = []
    resumed = TrainerAE(tiny_autoencoder((1, 16, 16), seed=7), cfg, train_dl, val_dl, data_fingerprint='fp', log=log.append)
    resumed.train_with_restart('auto')
    assert any('resuming from' in m and 'emergency.pth' in m and (expect or '') in m for m in log), log
    assert_same_weights(straight.model, resumed.model)
    for key in ('epoch', 'train_loss', 'val_loss', 'lr'): assert resumed.history[key] == straight.history[key], key
    assert resumed.position == straight.position


def test_interrupted_mid_epoch_then_resumed_equals_uninterrupted(tmp_path):
    straight = straight_run(tmp_path/'a')

    def stop(trainer, b): trainer.request_stop(signal.SIGTERM); return b
    interrupted = hooked_trainer(tmp_path/'b', 1, 4, stop)
    with pytest.raises(TrainingInterrupted) as e: interrupted.train()
    assert e.value.exit_code == 143
    assert interrupted.position == (1, 4, 10)
    saved = interrupted.save_checkpoint('emergency')
    assert saved.name == 'emergency.pth'
    assert load_checkpoint(saved)['accumulators']['n_samples'] == 4 * 16
    resume_and_compare(tmp_path/'b', straight, expect='epoch 2/3, step 4/6')


def test_an_augmented_run_resumes_exactly_and_trains_on_the_symmetries(tmp_path):
    "Each step draws its symmetries from (seed, rank, step) alone: a resume mid-epoch redraws them exactly."
    data = {'augment': 'dihedral'}
    straight = straight_run(tmp_path/'a', data=data)
    plain = straight_run(tmp_path/'p')
    assert straight.history['train_loss'] != plain.history['train_loss']   # the batches were transformed
    def stop(trainer, b): trainer.request_stop(signal.SIGTERM); return b
    interrupted = hooked_trainer(tmp_path/'b', 1, 4, stop, data=data)
    with pytest.raises(TrainingInterrupted): interrupted.train()
    interrupted.save_checkpoint('emergency')
    resume_and_compare(tmp_path/'b', straight, expect='epoch 2/3, step 4/6', data=data)


class StopAfterStep(Hook):
    "Ask `trainer` to stop once batch `step` of epoch `epoch` has been trained on (a signal during that step)."
    def iter_epoch(self, epoch, start=0):
        for i, b in enumerate(self.loader.iter_epoch(epoch, start), start):
            yield b
            if (epoch, i) == (self.epoch, self.step): self.trainer.request_stop(signal.SIGINT)


@pytest.mark.parametrize('epoch, step, position', [(0, -1, (0, 0, 0)), (0, 0, (0, 1, 1)), (1, 5, (1, 6, 12)), (2, 5, (2, 6, 18))])
def test_resume_is_exact_from_any_step_boundary(tmp_path, epoch, step, position):
    "Before the first step, after it, after the last step of an epoch, after the last step of the run."
    straight = straight_run(tmp_path/'a')
    cfg, model, train_dl, val_dl = tiny(tmp_path/'b')
    if step < 0: train_dl = Hook(train_dl, 0, 0, lambda t, b: (t.request_stop(signal.SIGINT), b)[1])
    else: train_dl = StopAfterStep(train_dl, epoch, step, None)
    interrupted = TrainerAE(model, cfg, train_dl, val_dl, data_fingerprint='fp', log=lambda m: None)
    train_dl.trainer = interrupted
    interrupted.setup_training()
    with pytest.raises(TrainingInterrupted): interrupted.train()
    assert interrupted.position == position
    interrupted.save_checkpoint('emergency')
    resume_and_compare(tmp_path/'b', straight, expect=f"step {position[1]}/6")


def test_real_sigterm_stops_at_a_step_boundary_and_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    def kill(trainer, b): os.kill(os.getpid(), signal.SIGTERM); return b
    trainer = hooked_trainer(tmp_path, 0, 2, kill)
    with pytest.raises(TrainingInterrupted) as e: trainer.train()
    assert e.value.signum == signal.SIGTERM
    assert trainer.position == (0, 2, 2)
    assert signal.getsignal(signal.SIGTERM) is before


def test_damaged_checkpoints_are_detected_and_skipped(tmp_path):
    trainer = straight_run(tmp_path, epochs=4)
    trainer.config.training.checkpoint.save_every = 1
    ckdir = trainer.checkpoint_dir
    # a newer emergency file, then damage it (bit flip) and truncate latest and final
    trainer.save_checkpoint('restart')
    data = bytearray((ckdir/'latest.pth').read_bytes())
    weight = max(trainer.model.state_dict().values(), key=lambda t: t.numel())
    at = bytes(data).find(weight.numpy().tobytes())
    assert at > 0
    flipped = bytearray(data); flipped[at + 5] ^= 0x01   # one bit inside a weight tensor: still unpickles
    (ckdir/'emergency.pth').write_bytes(flipped)
    (ckdir/'latest.pth').write_bytes(data[:len(data) - 100])
    (ckdir/'final_checkpoint.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match='emergency.pth: damaged checkpoint .its SHA-256'): load_checkpoint(ckdir/'emergency.pth')
    for name in ('latest.pth', 'final_checkpoint.pth'):
        with pytest.raises(CheckpointError, match=f'{name}: damaged or not a checkpoint'): load_checkpoint(ckdir/name)
    skipped = []
    assert find_restart_checkpoint(trainer.run_dir, log=skipped.append) == ckdir/'restart_e0004.pth'
    assert len(skipped) == 3 and all('skipping' in m for m in skipped)


def test_a_planted_pickle_is_refused_not_executed(tmp_path):
    class Boom:
        def __reduce__(self): return (os.system, (f"touch {tmp_path/'pwned'}",))
    path = tmp_path/'checkpoints'/'latest.pth'
    path.parent.mkdir()
    torch.save({'format': 'ae_nb.checkpoint.v1', 'x': Boom()}, path)
    with pytest.raises(CheckpointError, match='latest.pth'): load_checkpoint(path)
    assert find_restart_checkpoint(tmp_path, log=lambda m: None) is None
    assert not (tmp_path/'pwned').exists()


KILL_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_trainer import tiny
from ae_nb.trainer import TrainerAE
torch.set_num_threads(1)
cfg, model, train_dl, val_dl = tiny({folder!r}, epochs=3)
trainer = TrainerAE(model, cfg, train_dl, val_dl, log=lambda m: print(m, flush=True))
trainer.setup_training()
trainer.train()
"""

def test_kill_9_during_a_checkpoint_write_leaves_the_previous_latest(tmp_path):
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    env = {**os.environ, 'AE_NB_TEST_PAUSE_IN_SAVE': 'latest:2', 'PYTHONUNBUFFERED': '1'}
    p = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line, deadline = '', time.time() + 60
        while 'AE_NB_TEST_PAUSE_IN_SAVE' not in line and time.time() < deadline and p.poll() is None:
            line = p.stderr.readline()
        assert 'paused writing' in line and 'latest.pth' in line, (line, p.poll())
        p.kill()
        p.wait(10)
    finally:
        if p.poll() is None: p.kill()
    ckdir = tmp_path/'tiny'/'checkpoints'
    assert list(ckdir.glob('.latest.pth.*.tmp')), "the kill should leave a half-written temporary file"
    assert load_checkpoint(ckdir/'latest.pth')['epoch'] == 1
    assert find_restart_checkpoint(tmp_path/'tiny', log=lambda m: None) == ckdir/'latest.pth'
    # and the run resumes from it to the same result as an uninterrupted one
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=3)
    resumed = TrainerAE(model, cfg, train_dl, val_dl, log=lambda m: None)
    resumed.train_with_restart('auto')
    assert_same_weights(resumed.model, straight_run(tmp_path/'straight').model)


def test_nan_loss_stops_cleanly_and_latest_stays_good(tmp_path):
    trainer = hooked_trainer(tmp_path, 1, 2, lambda t, b: b * float('nan'))
    with pytest.raises(TrainingError, match='loss became nan at epoch 2'): trainer.train()
    assert trainer.save_checkpoint('emergency') is None
    assert not (trainer.checkpoint_dir/'emergency.pth').exists()
    latest = load_checkpoint(trainer.checkpoint_dir/'latest.pth')
    assert latest['epoch'] == 1 and all(torch.isfinite(v).all() for v in latest['model'].values() if v.is_floating_point())


def test_retention_keeps_best_latest_and_the_last_restart_files(tmp_path):
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=6, checkpoint={'save_every': 1, 'keep_last': 2})
    trainer = TrainerAE(model, cfg, train_dl, val_dl, log=lambda m: None)
    trainer.setup_training()
    (trainer.checkpoint_dir).mkdir(parents=True)
    (trainer.checkpoint_dir/'notes.txt').write_text('mine')
    trainer.train()
    names = sorted(p.name for p in trainer.checkpoint_dir.iterdir())
    assert names == ['best.pth', 'final_checkpoint.pth', 'latest.pth', 'notes.txt', 'restart_e0005.pth', 'restart_e0006.pth']


def test_restart_refuses_another_model_or_data_and_logs_harmless_changes(tmp_path):
    straight_run(tmp_path, epochs=2)
    cfg, _, train_dl, val_dl = tiny(tmp_path, epochs=2)
    wider = TrainerAE(tiny_autoencoder((1, 16, 16), embedding_dim=5), cfg, train_dl, val_dl, data_fingerprint='fp')
    with pytest.raises(RestartError, match='embedding_dim 4 -> 5'): wider.train_with_restart('auto')
    other = TrainerAE(tiny_autoencoder((1, 16, 16)), cfg, train_dl, val_dl, data_fingerprint='other')
    with pytest.raises(RestartError, match='the data differ'): other.train_with_restart('auto')
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=3)
    log = []
    more = TrainerAE(model, cfg, train_dl, val_dl, data_fingerprint='fp', log=log.append)
    more.train_with_restart('auto')
    assert more.history['epoch'] == [1, 2, 3]
    assert any('training.epochs: 2 -> 3' in m for m in log), log


def test_checkpoint_holds_plain_data_only(tmp_path):
    cfg, model, train_dl, _ = tiny(tmp_path, epochs=1)
    trainer = TrainerAE(model, cfg, train_dl, None, norm={'method': 'minmax', 'shift': [np.float32(0.5)], 'scale': (1.0,)},
                        log=lambda m: None)
    trainer.setup_training(); trainer.train()
    assert trainer.history['val_loss'] == [None] and trainer.best_val == trainer.history['train_loss'][0]
    ck = torch.load(trainer.checkpoint_dir/'latest.pth', weights_only=True)
    for key in ['model', 'model_hparams', 'optimizer', 'scheduler', 'scaler', 'epoch', 'step_in_epoch', 'global_step',
                'best_val', 'history', 'accumulators', 'rng', 'norm', 'config', 'data_fingerprint', 'wandb_run_id',
                'ae_nb_version', 'sha256']:
        assert key in ck, key


def test_wandb_offline_run_id_survives_a_restart(tmp_path):
    pytest.importorskip('wandb')
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=1, plot_every=1)
    cfg.logging.wandb.mode = 'offline'
    first = TrainerAE(model, cfg, train_dl, val_dl, log=lambda m: None)
    first.setup_training(); first.train(); first.cleanup()
    run_id = first.wandb_run_id
    assert run_id and load_checkpoint(first.checkpoint_dir/'latest.pth')['wandb_run_id'] == run_id
    assert (tmp_path/'tiny'/'wandb').is_dir()
    assert sorted(p.name for p in (tmp_path/'tiny'/'plots').iterdir()) == ['loss_curves.png', 'reconstructions_e0001.png']
    cfg.training.epochs = 2
    second = TrainerAE(tiny_autoencoder((1, 16, 16)), cfg, train_dl, val_dl, log=lambda m: None)
    second.train_with_restart('auto'); second.cleanup()
    assert second.wandb_run_id == run_id
    assert load_checkpoint(second.checkpoint_dir/'final_checkpoint.pth')['wandb_run_id'] == run_id


def test_a_fresh_run_moves_an_earlier_run_aside_whole(tmp_path):
    first = straight_run(tmp_path, epochs=2)
    (first.checkpoint_dir/'.latest.pth.abc123.tmp').write_bytes(b'half a write')
    (first.run_dir/'plots').mkdir(exist_ok=True); (first.run_dir/'plots'/'old.png').write_bytes(b'old plot')
    log = []
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=1)
    second = TrainerAE(model, cfg, train_dl, val_dl, log=log.append)
    second.setup_training(); second.train()
    previous = list((first.run_dir/'previous').iterdir())
    assert len(previous) == 1 and (previous[0]/'checkpoints'/'latest.pth').is_file()
    assert load_checkpoint(previous[0]/'checkpoints'/'latest.pth')['epoch'] == 2
    assert (previous[0]/'plots'/'old.png').read_bytes() == b'old plot'   # old plots go with their run
    assert not (first.run_dir/'plots'/'old.png').exists()
    assert load_checkpoint(second.checkpoint_dir/'latest.pth')['epoch'] == 1
    assert not list(first.checkpoint_dir.glob('*.tmp'))
    assert any('earlier run' in m for m in log) and any('unfinished checkpoint write' in m for m in log), log


def test_emergency_file_is_removed_once_the_resumed_run_writes_latest(tmp_path):
    def stop(trainer, b): trainer.request_stop(signal.SIGINT); return b
    interrupted = hooked_trainer(tmp_path, 0, 3, stop, epochs=2)
    with pytest.raises(TrainingInterrupted): interrupted.train()
    interrupted.save_checkpoint('emergency')
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=2)
    resumed = TrainerAE(model, cfg, train_dl, val_dl, log=lambda m: None)
    resumed.train_with_restart('auto')
    assert resumed.resumed_from.name == 'emergency.pth'
    assert not (resumed.checkpoint_dir/'emergency.pth').exists()


def test_a_signal_after_the_last_step_is_not_swallowed(tmp_path):
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=2)
    trainer = TrainerAE(model, cfg, train_dl, val_dl, log=lambda m: None)
    trainer.log = lambda m: trainer.request_stop(signal.SIGTERM) if m.startswith('epoch   2/2') else None
    trainer.setup_training()
    with pytest.raises(TrainingInterrupted): trainer.train()
    assert trainer.position == (2, 0, 12)
    assert load_checkpoint(trainer.checkpoint_dir/'final_checkpoint.pth')['epoch'] == 2


def test_calling_train_again_after_an_interruption_continues_exactly(tmp_path):
    "In a notebook the interrupt button pauses training; `train()` again picks up at the same step."
    straight = straight_run(tmp_path/'a')
    def stop(trainer, b): trainer.request_stop(signal.SIGINT); return b
    trainer = hooked_trainer(tmp_path/'b', 1, 2, stop)
    with pytest.raises(TrainingInterrupted): trainer.train()
    trainer.train_loader.epoch = -1   # the hook fires only once
    trainer.train()
    assert_same_weights(straight.model, trainer.model)
    assert trainer.history['train_loss'] == straight.history['train_loss']


def test_history_csv_and_tensorboard_hold_every_epoch_also_after_a_resume(tmp_path):
    "What Lightning users look for: a per-epoch table pandas reads, and TensorBoard event files."
    import csv
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    def stop(trainer, b): trainer.request_stop(signal.SIGTERM); return b
    interrupted = hooked_trainer(tmp_path, 1, 2, stop, epochs=3)
    interrupted.config = validate_configuration({**interrupted.config.model_dump(),
                                                 'logging': {'progress': 'never', 'tensorboard': True,
                                                             'wandb': {'mode': 'disabled'}}})
    with pytest.raises(TrainingInterrupted): interrupted.train()
    interrupted.save_checkpoint('emergency'); interrupted.cleanup()
    cfg, model, train_dl, val_dl = tiny(tmp_path, epochs=3)
    cfg = validate_configuration({**cfg.model_dump(), 'logging': {'progress': 'never', 'tensorboard': True,
                                                                  'wandb': {'mode': 'disabled'}}})
    resumed = TrainerAE(model, cfg, train_dl, val_dl, data_fingerprint='fp', log=lambda m: None)
    resumed.train_with_restart('auto'); resumed.cleanup()
    rows = list(csv.DictReader(open(tmp_path/'tiny'/'history.csv')))
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert [float(r['train_loss']) for r in rows] == resumed.history['train_loss']
    events = EventAccumulator(str(tmp_path/'tiny'/'tensorboard')).Reload()
    epochs = events.Scalars('train/loss')
    assert [e.step for e in epochs] == [6, 12, 18]
    assert [e.value for e in epochs] == pytest.approx([float(r['train_loss']) for r in rows])
