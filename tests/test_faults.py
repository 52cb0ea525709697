"Fault injection: kill -9 at random moments, damaged files of every kind, a full disk, fuzzed configs, bad data."
import contextlib, errno, io, json, os, random, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import run_ae
from ae_nb.cli import cli_main
from ae_nb.config import validate_configuration, config_to_dict
from ae_nb.data import DataError, load_or_create_datasets
from ae_nb.trainer import (CHECKPOINT_FORMAT, CheckpointError, TrainerAE, checkpoint_digest, find_restart_checkpoint,
                           load_checkpoint)

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import tiny, straight_run  # the tiny deterministic in-process run


# ---------------------------------------------------------------- kill -9 at random moments of a CLI run

def kill_run(results_dir):
    "A short deterministic CLI run (about 80 steps) whose checkpoints are written often."
    o = {'data.source': 'synthetic', 'data.synthetic.n_samples': 640, 'data.synthetic.height': 16,
         'data.synthetic.width': 16, 'data.batch_size': 16, 'model.channels': '[8, 16]', 'model.embedding_dim': 4,
         'training.epochs': 3, 'training.plot_every': 1, 'training.checkpoint.save_every': 1,
         'logging.wandb.mode': 'disabled', 'logging.progress': 'never', 'experiment.deterministic': 'true',
         'resources.threads': 1, 'experiment.results_dir': str(results_dir), 'experiment.name': 'k'}
    return ['ae_train'] + [a for k, v in o.items() for a in ('--override', f'{k}={v}')]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "The uninterrupted run: its final weights and how long it took."
    folder = tmp_path_factory.mktemp('reference')
    t0 = time.time()
    r = run_ae(*kill_run(folder), cwd=folder)
    assert r.returncode == 0, r.stdout + r.stderr
    return torch.load(folder/'k'/'checkpoints'/'final_checkpoint.pth', weights_only=True)['model'], time.time() - t0


def kill_then_restart(tmp_path, reference, seed):
    weights, duration = reference
    when = random.Random(seed).uniform(0.2, duration)   # anywhere: imports, data build, a step, a checkpoint write, the report
    p = subprocess.Popen(kill_run(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(when)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    r = run_ae(*kill_run(tmp_path), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 0, f"killed after {when:.2f}s; restart failed:\n{r.stdout}\n{r.stderr}"
    final = torch.load(tmp_path/'k'/'checkpoints'/'final_checkpoint.pth', weights_only=True)['model']
    for k in weights: assert torch.equal(weights[k], final[k]), f"killed after {when:.2f}s: {k} differs"


@pytest.mark.parametrize('seed', range(1))
def test_kill_9_at_a_random_moment_then_restart_equals_uninterrupted(tmp_path, reference, seed):
    kill_then_restart(tmp_path, reference, seed)


@pytest.mark.slow
@pytest.mark.parametrize('seed', range(1, 23))
def test_kill_9_at_a_random_moment_22_more_seeds(tmp_path, reference, seed):
    kill_then_restart(tmp_path, reference, seed)


# ---------------------------------------------------------------- damaged checkpoints and caches (the kinds tests/test_trainer.py and tests/test_data.py leave out)

def resealed(checkpoint, **changes):
    "`checkpoint` with `changes` and a valid SHA-256 again: damage that a checksum alone cannot catch."
    c = {**checkpoint, **changes}
    c['sha256'] = checkpoint_digest(c)
    return c


def test_a_checkpoint_of_another_format_version_is_refused_by_name(tmp_path):
    trainer = straight_run(tmp_path, epochs=1)
    latest = trainer.checkpoint_dir/'latest.pth'
    torch.save(resealed(load_checkpoint(latest), format='ae_nb.checkpoint.v999'), latest)
    with pytest.raises(CheckpointError, match=f"latest.pth: not an ae_nb checkpoint .no '{CHECKPOINT_FORMAT}'"): load_checkpoint(latest)
    skipped = []
    assert find_restart_checkpoint(trainer.run_dir, log=skipped.append) != latest
    assert any('latest.pth' in m for m in skipped)


def test_a_checkpoint_that_is_not_a_dict_or_is_random_bytes_is_refused(tmp_path):
    for name, content in [('list.pth', lambda p: torch.save([1, 2, 3], p)),
                          ('random.pth', lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096))),
                          ('numpy.pth', lambda p: np.save(open(p, 'wb'), np.zeros(3)))]:
        path = tmp_path/name
        content(path)
        with pytest.raises(CheckpointError, match=name): load_checkpoint(path)


def test_a_pickle_planted_as_a_cache_array_or_manifest_is_never_run(tmp_path):
    cfg = validate_configuration({'experiment': {'results_dir': str(tmp_path), 'name': 'c'}, 'data': {'source': 'synthetic',
                                  'synthetic': {'n_samples': 64, 'height': 8, 'width': 8}}})
    first = load_or_create_datasets(cfg, log=lambda m: None)
    cache, expected = Path(first.stats['cache_path']), np.array(first.train.x)  # a copy: the map dies with the file
    del first
    class Boom:
        def __reduce__(self): return (os.system, (f"touch {tmp_path/'pwned'}",))
    import pickle
    manifest = json.loads((cache/'manifest.json').read_text())
    manifest['format_version'] = 999                       # another ae_nb's cache: valid JSON, wrong version
    (cache/'manifest.json').write_text(json.dumps(manifest))
    for f in cache.glob('*.npy'): f.write_bytes(pickle.dumps(Boom()))
    lines = []
    again = load_or_create_datasets(cfg, log=lines.append)
    assert not (tmp_path/'pwned').exists()
    assert again.stats['cache'] == 'rebuilt' and any('damaged' in l or 'version' in l for l in lines), lines
    np.testing.assert_array_equal(np.asarray(again.train.x), expected)


# ---------------------------------------------------------------- a full disk while a checkpoint is written

class FullDisk:
    "Stand-in for `os.fdopen` whose files accept `room` bytes, then fail like a full disk (ENOSPC)."
    def __init__(self, room): self.room, self.real = room, os.fdopen
    def __call__(self, fd, mode='r', *a, **kw):
        f, owner = self.real(fd, mode, *a, **kw), self
        class File:
            def __enter__(s): return s
            def __exit__(s, *exc): f.close()
            def write(s, data):
                if len(data) > owner.room: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                owner.room -= len(data); return f.write(data)
            def __getattr__(s, name): return getattr(f, name)
        return File()


def test_disk_full_while_saving_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    trainer = straight_run(tmp_path, epochs=1)
    latest = trainer.checkpoint_dir/'latest.pth'
    before = latest.read_bytes()
    monkeypatch.setattr('ae_nb.trainer.os.fdopen', FullDisk(room=1000))
    trainer.epoch += 1                       # something new to save
    with pytest.raises(OSError, match=r'could not write .*latest.pth \(No space left on device\); the previous file is unchanged'):
        trainer.save_checkpoint('latest')
    assert latest.read_bytes() == before and load_checkpoint(latest)['epoch'] == 1
    assert not list(trainer.checkpoint_dir.glob('.*.tmp')), "the partial temporary file is removed"


@pytest.fixture
def tiny_tmpfs(tmp_path):
    "A 2 MiB tmpfs (a real full disk), when this process may mount one."
    mnt = tmp_path/'small_disk'; mnt.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(['umount', '-l', str(mnt)], check=False)


def test_a_real_full_disk_mid_run_stops_with_a_clear_error_and_latest_stays_good(tiny_tmpfs):
    cfg, model, train_dl, val_dl = tiny(tiny_tmpfs, epochs=3)
    trainer = TrainerAE(model, cfg, train_dl, val_dl, data_fingerprint='fp', log=lambda m: None)
    trainer.setup_training()
    trainer.config.training.epochs = 1; trainer.train(); trainer.config.training.epochs = 3
    latest = trainer.checkpoint_dir/'latest.pth'
    with contextlib.suppress(OSError), open(tiny_tmpfs/'filler', 'wb', buffering=0) as f:  # fill the disk
        while True: f.write(b'\0' * 4096)
    with pytest.raises(OSError, match='No space left on device'): trainer.train()
    assert load_checkpoint(latest)['epoch'] == 1
    assert not list(trainer.checkpoint_dir.glob('.*.tmp'))


# ---------------------------------------------------------------- config fuzzing (in-process, through cli_main)

def flat_keys(d, prefix=''):
    for k, v in d.items():
        if isinstance(v, dict) and v: yield from flat_keys(v, f'{prefix}{k}.')
        else: yield prefix + k

KEYS = sorted(flat_keys(config_to_dict(validate_configuration({}))))
VALUES = st.one_of(st.sampled_from(['0', '-1', '1e309', 'nan', 'true', 'null', '[]', '[1, 2]', '{a: 1}', 'x', "'", '[', ':', '---',
                                    '&a', '*a', '!!python/object:os.system', '1.5', '99999999999999999999', '""', '~', 'cpu',
                                    'synthetic', 'batch', 'cosine', '[2, [1, 2]]', '-0.0', 'inf']),
                   st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(repr),
                   st.text(max_size=12).filter(lambda s: '\x00' not in s))
KEY = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k + 'x'), st.text(min_size=0, max_size=15),
                st.sampled_from(KEYS).map(lambda k: k.rsplit('.', 1)[0]))
OVERRIDE = st.one_of(st.builds(lambda k, v: f'{k}={v}', KEY, VALUES), st.text(max_size=20).filter(lambda s: '\x00' not in s))


def run_cli(argv):
    "cli_main in-process: (exit code, stdout, stderr); anything but SystemExit fails the test."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: cli_main(argv)
        except SystemExit as e: return e.code, out.getvalue(), err.getvalue()
    raise AssertionError(f"cli_main returned without exiting: {argv}")


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(OVERRIDE, min_size=1, max_size=4), st.sampled_from(['--validate-config', '--dry-run']))
def test_fuzzed_overrides_exit_0_or_1_naming_keys(overrides, mode):
    code, out, err = run_cli([mode] + [f'--override={o}' for o in overrides])
    assert code in (0, 1), (code, overrides, err)
    assert 'Traceback' not in out + err, err
    if code == 1:
        assert err.startswith('ae_train: invalid configuration'), err
        announced = int(re.search(r'\((\d+) problems?\)', err.splitlines()[0]).group(1))
        # every problem names the key: a dotted schema path, or the override it could not read (a problem may
        # continue on a second line, as YAML's own messages do)
        naming = [p for p in err.splitlines()[1:] if p.startswith('  ') and ('.' in p or '--override' in p or "'" in p)]
        assert announced >= 1 and len(naming) >= announced, err


YAML_DOCS = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                         lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                 st.dictionaries(st.one_of(st.sampled_from(KEYS + [k.split('.')[0] for k in KEYS]),
                                                                           st.text(max_size=6)), inner, max_size=4)),
                         max_leaves=12)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(YAML_DOCS)
def test_fuzzed_config_files_exit_0_or_1(tmp_path_factory, doc):
    import yaml
    path = tmp_path_factory.getbasetemp()/'fuzz.yaml'
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    code, out, err = run_cli(['--validate-config', '--config', str(path)])
    assert code in (0, 1), (code, doc, err)
    assert 'Traceback' not in out + err
    if code == 1: assert 'fuzz.yaml' in err or '.' in err, err


# ---------------------------------------------------------------- a corpus of bad data

def folder_config(tmp_path, glob, **data):
    return validate_configuration({'experiment': {'results_dir': str(tmp_path/'runs'), 'name': 'bad'},
                                   'data': {'source': 'folder', 'raw_glob': glob, 'layout': 'NHW', **data}})


def nothing_half_written(tmp_path):
    "After a refused data set: no cache entry and no temporary build folder (lock files may remain)."
    cache = tmp_path/'runs'/'cache'
    left = [p.name for p in cache.iterdir() if not p.name.endswith('.lock')] if cache.exists() else []
    assert not left, left


def save(folder, **arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items(): np.save(folder/f'{name}.npy', a)
    return str(folder/'*.npy')


RNG = np.random.default_rng(0)
BAD = {
    'empty glob': (lambda d: str(d/'none'/'*.npy'), {}, 'matched no'),
    'garbage file': (lambda d: (save(d, good=RNG.random((20, 8, 8), dtype=np.float32)), (d/'bad.npy').write_bytes(b'\x93NUMPY\x01\x00junk'))[0],
                     {}, 'bad.npy'),
    'all NaN': (lambda d: save(d, a=np.full((20, 8, 8), np.nan, np.float32)), {}, 'nonfinite'),
    'all inf': (lambda d: save(d, a=np.full((20, 8, 8), -np.inf, np.float32)), {}, 'nonfinite'),
    'complex numbers': (lambda d: save(d, a=RNG.random((20, 8, 8)) + 1j), {}, 'complex'),
    'strings': (lambda d: save(d, a=np.array([['a'] * 8] * 8 * 20).reshape(20, 8, 8)), {}, 'a.npy'),
    'zero samples after filtering': (lambda d: save(d, a=RNG.random((20, 8, 8), dtype=np.float32)), {'filters': {'value_range': [5, 6]}}, 'value_range'),
    'too few samples to split': (lambda d: save(d, a=RNG.random((2, 8, 8), dtype=np.float32)), {}, 'at least 3'),
    'mixed shapes': (lambda d: save(d, a=RNG.random((5, 8, 8), dtype=np.float32), b=RNG.random((5, 9, 9), dtype=np.float32)), {}, 'shape'),
}


@pytest.mark.parametrize('case', BAD)
def test_bad_data_is_a_clear_error_and_nothing_is_half_written(tmp_path, case):
    make, data, expected = BAD[case]
    glob = make(tmp_path/'raw')
    with pytest.raises((DataError, ValueError), match=expected): load_or_create_datasets(folder_config(tmp_path, glob, **data), log=lambda m: None)
    nothing_half_written(tmp_path)


def unit_values(splits):
    for part in (splits.train, splits.val, splits.test):
        x = np.asarray(part.x)
        assert x.dtype == np.float32 and np.isfinite(x).all() and x.min() >= -1e-6 and x.max() <= 1 + 1e-6


def test_mixed_dtypes_and_out_of_float32_values(tmp_path):
    "int16, bool and float64 files together; float64 values beyond float32 become inf and are dropped as non-finite."
    glob = save(tmp_path/'raw', ints=(RNG.random((10, 8, 8)) * 3e4).astype(np.int16), bools=RNG.random((10, 8, 8)) > 0.5,
                doubles=RNG.random((10, 8, 8)), beyond=RNG.random((4, 8, 8)) * 1e300 + 1e299)
    with pytest.warns(RuntimeWarning): splits = load_or_create_datasets(folder_config(tmp_path, glob), log=lambda m: None)
    assert splits.stats['removed']['nonfinite'] == 4 and len(splits.train) + len(splits.val) + len(splits.test) == 30
    unit_values(splits)


def test_huge_finite_values_are_refused_or_normalise_to_finite_values(tmp_path):
    glob = save(tmp_path/'raw', huge=((RNG.random((20, 8, 8)) - 0.5) * 6e38).astype(np.float32))
    try: splits = load_or_create_datasets(folder_config(tmp_path, glob), log=lambda m: None)
    except DataError: return   # a clear refusal is fine too
    unit_values(splits)


def test_a_split_that_leaves_validation_empty_trains_on_the_training_loss(tmp_path):
    cfg = validate_configuration({'experiment': {'results_dir': str(tmp_path), 'name': 'noval'},
                                  'data': {'source': 'synthetic', 'synthetic': {'n_samples': 64, 'height': 8, 'width': 8},
                                           'split': {'train': 0.9, 'val': 0.0, 'test': 0.1}},
                                  'model': {'channels': [4], 'strides': [2], 'embedding_dim': 2},
                                  'training': {'epochs': 2, 'plot_every': 0}, 'resources': {'threads': 1},
                                  'logging': {'progress': 'never', 'wandb': {'mode': 'disabled'}}})
    from ae_nb.cli import main
    assert main(cfg) == 0
    ck = load_checkpoint(tmp_path/'noval'/'checkpoints'/'final_checkpoint.pth')
    assert ck['history']['val_loss'] == [None, None] and len(ck['history']['train_loss']) == 2


def test_a_planted_pickle_is_refused_in_one_complete_sentence_and_never_run(tmp_path):
    "The refusal names the file and says why, in full; PyTorch's advice to load it unsafely is not passed on."
    import pickle
    class Boom:
        def __reduce__(self): return (os.system, (f"touch {tmp_path/'pwned'}",))
    fake = tmp_path/'best.pth'
    fake.write_bytes(pickle.dumps({'format': CHECKPOINT_FORMAT, 'model': Boom()}))
    r = run_ae('ae_report', '--checkpoint', str(fake), cwd=tmp_path)
    assert r.returncode == 1 and not (tmp_path/'pwned').exists()
    assert r.stderr.strip().endswith('ae_nb never runs code from a checkpoint)'), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'weights_only' not in r.stderr, r.stderr
