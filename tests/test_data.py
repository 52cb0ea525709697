"Integration tests of ae_nb.data: raw folder trees, filters with counts, cache hits and rebuilds, kills while writing."
import json, os, pickle, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ae_nb.config import validate_configuration
from ae_nb.data import (ArrayBatches, BadFileError, DataError, create_filtered_split_datasets, load_or_create_datasets,
                        make_example_raw_tree, make_loaders, print_inputdata_stats, read_cache, read_raw_file, synthetic_images)

quiet = lambda message: None


@pytest.fixture
def raw(tmp_path):
    "Three dated folders: npy, npz, png, one corrupt file, one NaN sample, one constant sample, one 20x20 sample."
    return make_example_raw_tree(tmp_path/'raw')


def folder_config(raw, tmp_path, **data):
    data = {'source': 'folder', 'raw_glob': str(raw/'2025_*'), 'cache_dir': str(tmp_path/'cache'), **data}
    return validate_configuration({'data': data})


def clean_config(raw, tmp_path, **data):
    "Skip the corrupt file and keep 16x16 samples: the settings under which the example tree builds."
    filters = {'expected_shape': [16, 16], **data.pop('filters', {})}
    return folder_config(raw, tmp_path, skip_bad_files=True, filters=filters, **data)


def split_files(splits):
    "Set of source file numbers in each split."
    return [set(s.index[:, 0].tolist()) for s in (splits.train, splits.val, splits.test)]


# --- reading and filtering ---------------------------------------------------------------------------

def test_corrupt_file_is_an_error_naming_it(raw, tmp_path):
    with pytest.raises(BadFileError, match=r"2025_01_03/corrupt\.npy: cannot read.*skip_bad_files"):
        create_filtered_split_datasets(folder_config(raw, tmp_path), log=quiet)


def test_mixed_shapes_are_listed_with_files(raw, tmp_path):
    with pytest.raises(DataError) as e:
        create_filtered_split_datasets(folder_config(raw, tmp_path, skip_bad_files=True), log=quiet)
    message = str(e.value)
    assert '(1, 16, 16): 21 samples in 7 files' in message
    assert '(1, 20, 20): 1 samples in 1 files, e.g. ' + str(raw/'2025_01_03'/'odd.npy') in message
    assert 'expected_shape' in message


def test_each_rule_counts_what_it_removed(raw, tmp_path):
    lines = []
    splits = create_filtered_split_datasets(clean_config(raw, tmp_path), log=lines.append)
    s = splits.stats
    assert s['files'] == 9 and s['samples_read'] == 22
    assert s['removed'] == {'unreadable_files': 1, 'shape': 1, 'nonfinite': 1, 'constant': 1}
    assert s['samples_kept'] == 19 == sum(s['split'].values())
    assert len(s['bad_files']) == 1 and 'corrupt.npy' in s['bad_files'][0]
    assert any('skipped 1 unreadable file' in l for l in lines)
    for ds in (splits.train, splits.val, splits.test):   # the NaN and the constant sample are gone
        assert np.isfinite(ds.x).all() and (ds.x.reshape(len(ds), -1).std(1) > 0).all()


def test_value_range_and_min_std_count_exactly(raw, tmp_path):
    np.save(raw/'2025_01_02'/'bright.npy', synthetic_images(3, 1, 16, 16, seed=9) * 510)   # 3 samples above 255
    base = create_filtered_split_datasets(clean_config(raw, tmp_path, normalize='none'), log=quiet)
    assert base.stats['samples_kept'] == 22
    x = np.concatenate([base.train.x, base.val.x, base.test.x]).reshape(22, -1)
    in_range = x.max(1) <= 255
    threshold = float(np.quantile(x[in_range].std(1), 0.3))
    expected_std = int((in_range & (x.std(1) < threshold)).sum())
    splits = create_filtered_split_datasets(clean_config(raw, tmp_path, filters={'value_range': [0, 255], 'min_std': threshold}), log=quiet)
    assert splits.stats['removed']['value_range'] == 3
    assert splits.stats['removed']['min_std'] == expected_std > 0
    assert splits.stats['samples_kept'] == 22 - 3 - expected_std


def test_layouts_npz_keys_and_images(tmp_path):
    np.save(tmp_path/'stack.npy', np.ones((3, 4, 5)))
    with pytest.raises(DataError, match='ambiguous; set data.layout'): read_raw_file(tmp_path/'stack.npy')
    assert read_raw_file(tmp_path/'stack.npy', layout='NHW').shape == (3, 1, 4, 5)
    assert read_raw_file(tmp_path/'stack.npy', layout='CHW').shape == (1, 3, 4, 5)
    np.savez(tmp_path/'two.npz', images=np.ones((2, 1, 4, 5)), labels=np.arange(2))
    assert read_raw_file(tmp_path/'two.npz', npz_key='images').shape == (2, 1, 4, 5)
    with pytest.raises(BadFileError, match=r"two\.npz: holds 2 arrays"): read_raw_file(tmp_path/'two.npz')
    with pytest.raises(BadFileError, match="has no array 'x'"): read_raw_file(tmp_path/'two.npz', npz_key='x')
    np.save(tmp_path/'objects.npy', np.array([{'a': 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadFileError, match=r'objects\.npy: cannot read'): read_raw_file(tmp_path/'objects.npy')
    frames = [Image.fromarray(np.full((4, 5), v, np.uint8)) for v in (1, 2, 3)]
    frames[0].save(tmp_path/'pages.tif', save_all=True, append_images=frames[1:])
    pages = read_raw_file(tmp_path/'pages.tif')
    assert pages.shape == (3, 1, 4, 5) and pages[:, 0, 0, 0].tolist() == [1, 2, 3]
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path/'colour.jpg')
    assert read_raw_file(tmp_path/'colour.jpg').shape == (1, 3, 4, 5)


# --- split --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('group_by', ['file', 'folder'])
def test_group_split_keeps_each_group_in_one_split(raw, tmp_path, group_by):
    splits = create_filtered_split_datasets(clean_config(raw, tmp_path, split={'group_by': group_by}), log=quiet)
    files = splits.train.files
    key = (lambda f: f) if group_by == 'file' else (lambda f: str(Path(files[f]).parent))
    groups = [{key(f) for f in part} for part in split_files(splits)]
    for a in range(3):
        for b in range(a + 1, 3): assert not groups[a] & groups[b], (group_by, groups)
    assert all(groups), groups  # every split got a group
    every_file = set().union(*split_files(splits))
    for f in every_file:       # all kept samples of a file are in the split that holds the file
        holders = [i for i, part in enumerate(split_files(splits)) if f in part]
        assert len(holders) == 1


def test_split_is_seeded(raw, tmp_path):
    a = create_filtered_split_datasets(clean_config(raw, tmp_path), log=quiet)
    b = create_filtered_split_datasets(clean_config(raw, tmp_path), log=quiet)
    c = create_filtered_split_datasets(validate_configuration({**clean_config(raw, tmp_path).model_dump(), 'experiment': {'seed': 7}}), log=quiet)
    assert np.array_equal(a.test.index, b.test.index) and np.array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.index, c.test.index)


def test_normalisation_is_fitted_on_train_only(raw, tmp_path):
    splits = create_filtered_split_datasets(clean_config(raw, tmp_path), log=quiet)
    assert splits.train.x.min() == pytest.approx(0, abs=1e-6) and splits.train.x.max() == pytest.approx(1, abs=1e-6)
    raw_train = np.concatenate([read_raw_file(splits.train.files[f]) for f in sorted(set(splits.train.index[:, 0]))])
    assert splits.norm['method'] == 'minmax' and splits.norm['scale'][0] > 0
    assert splits.norm['shift'][0] >= np.nanmin(raw_train) - 1e-3



# --- links and overlapping globs ---------------------------------------------------------------------

def linked_tree(raw):
    "The example tree plus a folder linked back up to its root and a second name for one file."
    (raw/'2025_01_01'/'loop').symlink_to(raw)
    (raw/'2025_01_02'/'same_stack.npy').symlink_to(raw/'2025_01_01'/'stack.npy')
    return raw


def sample_rows(ds):
    return {row.tobytes() for row in np.asarray(ds.x).reshape(len(ds), -1)}


@pytest.mark.parametrize('pattern', ['2025_*', '**', ['2025_*', '2025_01_0[12]']])
def test_each_file_is_read_once_through_links_and_overlapping_globs(raw, tmp_path, monkeypatch, pattern):
    import ae_nb.data as data
    plain = create_filtered_split_datasets(clean_config(raw, tmp_path), log=quiet)
    linked_tree(raw)
    reads, real_read = [], data.read_raw_file
    monkeypatch.setattr(data, 'read_raw_file', lambda path, *a: reads.append(os.path.realpath(path)) or real_read(path, *a))
    globs = [str(raw/p) for p in ([pattern] if isinstance(pattern, str) else pattern)]
    lines = []
    splits = create_filtered_split_datasets(clean_config(raw, tmp_path, raw_glob=globs), log=lines.append)
    assert len(reads) == len(set(reads)) == 9                 # each of the 9 files once, however many paths lead to it
    assert splits.stats['samples_read'] == 22 and splits.stats['samples_kept'] == 19
    train, val, test = map(sample_rows, (splits.train, splits.val, splits.test))
    assert not (train & val or train & test or val & test)     # no sample in two splits
    assert len(train | val | test) == 19
    for a, b in zip((plain.train, plain.val, plain.test), (splits.train, splits.val, splits.test)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.index, b.index)   # the same data set as without the links
    n = splits.stats['duplicate_paths']
    assert n > 0 and any(f"{n} path(s) lead to files already listed" in l and 'each file is read once' in l for l in lines)
    shown = []
    print_inputdata_stats(splits, log=shown.append)
    assert any(f'duplicates: {n} path(s)' in l for l in shown)


def test_a_file_is_kept_under_its_first_path_and_a_loop_ends_at_once(raw, tmp_path):
    from ae_nb.data import find_raw_files
    linked_tree(raw)
    (raw/'2025_01_03'/'loop2').symlink_to(raw)                # two loops: 2**40 paths for glob's own '**'
    start = time.perf_counter()
    files = find_raw_files(str(raw/'**'))
    assert time.perf_counter() - start < 2
    assert len(files) == 9 and len({os.path.realpath(f) for f in files}) == 9
    assert raw/'2025_01_01'/'stack.npy' in files and raw/'2025_01_02'/'same_stack.npy' not in files
    assert files.duplicates == 1


def test_fingerprint_ignores_an_extra_link_and_follows_edits(raw, tmp_path):
    cfg = clean_config(raw, tmp_path)
    first = load_or_create_datasets(cfg, log=quiet)
    (raw/'2025_01_02'/'a_second_name.npy').symlink_to(raw/'2025_01_01'/'stack.npy')  # sorts first in its folder
    lines = []
    again = load_or_create_datasets(cfg, log=lines.append)
    assert again.stats['cache'] == 'hit' and again.fingerprint == first.fingerprint
    assert again.stats['duplicate_paths'] == 1 and any('1 path(s) lead to files already listed' in l for l in lines)
    target = raw/'2025_01_01'/'stack.npy'
    np.save(target, np.load(target) + 1)                       # editing the file behind the link
    edited = load_or_create_datasets(cfg, log=quiet)
    assert edited.stats['cache'] == 'rebuilt' and edited.fingerprint != first.fingerprint
    assert 'stack.npy' in edited.stats['cache_reason']


def test_a_dangling_link_is_skipped_and_counted_through_the_cache(raw, tmp_path):
    (raw/'2025_01_02'/'gone.npy').symlink_to(tmp_path/'unmounted'/'x.npy')
    with pytest.raises(BadFileError, match=r'gone\.npy: a broken symbolic link'):
        load_or_create_datasets(folder_config(raw, tmp_path), log=quiet)
    splits = load_or_create_datasets(clean_config(raw, tmp_path), log=quiet)
    assert splits.stats['removed']['unreadable_files'] == 2 and splits.stats['samples_kept'] == 19
    assert any('gone.npy: a broken symbolic link' in b for b in splits.stats['bad_files'])

# --- cache --------------------------------------------------------------------------------------------

def test_second_run_is_a_hit_touch_and_filter_change_rebuild(raw, tmp_path):
    cfg, lines = clean_config(raw, tmp_path), []
    first = load_or_create_datasets(cfg, log=lines.append)
    assert first.stats['cache'] == 'rebuilt' and 'no cache yet' in first.stats['cache_reason']
    second = load_or_create_datasets(cfg, log=lines.append)
    assert second.stats['cache'] == 'hit' and isinstance(second.train.x, np.memmap)
    assert np.array_equal(second.train.x, first.train.x) and np.array_equal(second.test.index, first.test.index)
    assert second.train.source(0) == first.train.source(0)

    touched = raw/'2025_01_01'/'stack.npy'
    os.utime(touched, ns=(time.time_ns(), touched.stat().st_mtime_ns + 10**9))
    third = load_or_create_datasets(cfg, log=lines.append)
    assert third.stats['cache'] == 'rebuilt'
    assert '1 source file(s) changed' in third.stats['cache_reason'] and str(touched) in third.stats['cache_reason']
    assert load_or_create_datasets(cfg, log=lines.append).stats['cache'] == 'hit'

    stricter = clean_config(raw, tmp_path, filters={'min_std': 1.0})
    fourth = load_or_create_datasets(stricter, log=lines.append)
    assert fourth.stats['cache'] == 'rebuilt' and 'data.filters.min_std: None -> 1.0' in fourth.stats['cache_reason']
    assert any('building the data set (changed since' in l for l in lines)


def test_added_file_and_seed_change_rebuild(raw, tmp_path):
    cfg = clean_config(raw, tmp_path)
    load_or_create_datasets(cfg, log=quiet)
    np.save(raw/'2025_01_02'/'extra.npy', synthetic_images(2, 1, 16, 16))
    again = load_or_create_datasets(cfg, log=quiet)
    assert again.stats['cache'] == 'rebuilt' and '1 source file(s) added' in again.stats['cache_reason']
    assert again.stats['samples_read'] == 24
    reseeded = validate_configuration({**cfg.model_dump(), 'experiment': {'seed': 1}})
    assert 'experiment.seed: 42 -> 1' in load_or_create_datasets(reseeded, log=quiet).stats['cache_reason']
    batch = validate_configuration({**cfg.model_dump(), 'data': {**cfg.data.model_dump(), 'batch_size': 3}})
    assert load_or_create_datasets(batch, log=quiet).stats['cache'] == 'hit'   # batch size does not change the data


class Boom:
    "Would leave a marker file if it were ever unpickled."
    def __reduce__(self): return (Path.touch, (Path(os.environ.get('AE_NB_MARKER', '/nonexistent/marker')),))


@pytest.mark.parametrize('damage', ['truncate', 'delete', 'manifest', 'pickle', 'garbage_header'])
def test_damaged_cache_is_rebuilt_never_unpickled(raw, tmp_path, damage, monkeypatch):
    cfg, lines = clean_config(raw, tmp_path), []
    path = Path(load_or_create_datasets(cfg, log=quiet).stats['cache_path'])
    marker = tmp_path/'unpickled'
    monkeypatch.setenv('AE_NB_MARKER', str(marker))
    target = path/'train_x.npy'
    if damage == 'truncate':
        with open(target, 'r+b') as fh: fh.truncate(target.stat().st_size // 2)
    elif damage == 'delete': target.unlink()
    elif damage == 'manifest': (path/'manifest.json').write_text('{"format_version": ')
    elif damage == 'pickle': np.save(target, np.array([Boom()], dtype=object), allow_pickle=True)
    else: target.write_bytes(b'\x93NUMPY\x01\x00' + b'\xff' * 100)
    again = load_or_create_datasets(cfg, log=lines.append)
    assert again.stats['cache'] == 'rebuilt' and 'damaged' in again.stats['cache_reason']
    assert any('damaged' in l for l in lines)
    assert not marker.exists()
    assert load_or_create_datasets(cfg, log=quiet).stats['cache'] == 'hit'


def test_unwritable_cache_falls_back_to_memory(raw, tmp_path):
    (tmp_path/'not_a_folder').write_text('')
    cfg = clean_config(raw, tmp_path, cache_dir=str(tmp_path/'not_a_folder'))
    lines = []
    splits = load_or_create_datasets(cfg, log=lines.append)
    assert splits.stats['cache'] == 'off' and len(splits.train) > 0
    assert any('could not write the cache' in l for l in lines)


KILLER = textwrap.dedent('''
    import json, os, signal, sys, time
    from pathlib import Path
    import ae_nb.data as data
    from ae_nb.config import validate_configuration
    mode, config = sys.argv[1], validate_configuration(json.loads(sys.argv[2]))
    save, rename = data._finish_array, os.rename
    def save_then_wait(path, array):
        save(path, array)
        if path.name == 'val_x.npy':
            Path(sys.argv[3]).touch()
            if mode == 'self_kill': os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)
    def rename_then_die(a, b):
        rename(a, b)
        if str(b).endswith('-old'): os.kill(os.getpid(), signal.SIGKILL)
    if mode == 'between_renames': data.os.rename = rename_then_die
    else: data._finish_array = save_then_wait
    data.load_or_create_datasets(config, log=print)
''')


def write_and_kill(config, mode, tmp_path):
    "Start a cache write in a subprocess and SIGKILL it midway (from outside, or at an exact point from inside)."
    marker = tmp_path/f'writing-{mode}'
    proc = subprocess.Popen([sys.executable, '-c', KILLER, mode, json.dumps(config.model_dump(mode='json')), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if mode == 'external_kill':
        deadline = time.time() + 60
        while not marker.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
        assert marker.exists(), proc.communicate()
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.returncode


def visible_caches(root):
    return sorted(p.name for p in Path(root).iterdir() if not p.name.startswith('.'))


@pytest.mark.parametrize('mode', ['external_kill', 'self_kill'])
def test_kill_while_writing_leaves_no_cache(tmp_path, mode):
    cfg = validate_configuration({'data': {'source': 'synthetic', 'cache_dir': str(tmp_path/'cache'),
                                           'synthetic': {'n_samples': 64, 'height': 16, 'width': 16}}})
    write_and_kill(cfg, mode, tmp_path)
    assert visible_caches(tmp_path/'cache') == []           # only a hidden temporary folder may remain
    lines = []
    splits = load_or_create_datasets(cfg, log=lines.append)
    assert splits.stats['cache'] == 'rebuilt' and 'no cache yet' in splits.stats['cache_reason']
    left = [p for p in (tmp_path/'cache').iterdir() if not p.name.endswith('.lock')]
    assert left == [Path(splits.stats['cache_path'])]   # the dead writer's leftovers are gone


@pytest.mark.parametrize('mode', ['external_kill', 'between_renames'])
def test_kill_while_rewriting_leaves_old_cache_or_none(tmp_path, mode):
    data = {'source': 'synthetic', 'cache_dir': str(tmp_path/'cache'), 'synthetic': {'n_samples': 64, 'height': 16, 'width': 16}}
    cfg = validate_configuration({'data': data})
    old = load_or_create_datasets(cfg, log=quiet)
    rewrite = validate_configuration({'data': {**data, 'load_cache': False}})
    write_and_kill(rewrite, mode, tmp_path)
    caches = visible_caches(tmp_path/'cache')
    if mode == 'external_kill': assert caches == [Path(old.stats['cache_path']).name]
    else: assert caches == []
    again = load_or_create_datasets(cfg, log=quiet)   # either a hit on the old cache or a clean rebuild
    assert again.stats['cache'] == ('hit' if caches else 'rebuilt')
    assert np.array_equal(again.train.x, old.train.x)


PARALLEL = textwrap.dedent('''
    import json, sys
    from ae_nb.data import load_or_create_datasets
    from ae_nb.config import validate_configuration
    splits = load_or_create_datasets(validate_configuration(json.loads(sys.argv[1])), log=lambda m: None)
    print(json.dumps({'cache': splits.stats['cache'], 'sum': float(splits.train.x.sum())}))
''')


def test_parallel_processes_build_the_data_set_once(tmp_path):
    "Like the ranks of a distributed run: one builds, the others wait on the lock and find a hit."
    cfg = validate_configuration({'data': {'source': 'synthetic', 'cache_dir': str(tmp_path/'cache'),
                                           'synthetic': {'n_samples': 2000, 'height': 32, 'width': 32}}})
    procs = [subprocess.Popen([sys.executable, '-c', PARALLEL, json.dumps(cfg.model_dump(mode='json'))], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(r['cache'] for r in results) == ['hit', 'hit', 'rebuilt'], results
    assert len({r['sum'] for r in results}) == 1


# --- built-in sources and loaders -----------------------------------------------------------------------

def test_digits_and_synthetic_64_go_through_the_same_path(tmp_path):
    digits_cfg = validate_configuration({'data': {'cache_dir': str(tmp_path)}})
    synth_cfg = validate_configuration({'data': {'source': 'synthetic', 'cache_dir': str(tmp_path), 'batch_size': 32,
                                                 'synthetic': {'n_samples': 200, 'channels': 1, 'height': 64, 'width': 64}}})
    for cfg, shape, n in ((digits_cfg, (1, 8, 8), 1797), (synth_cfg, (1, 64, 64), 200)):
        built = load_or_create_datasets(cfg, log=quiet)
        splits = load_or_create_datasets(cfg, log=quiet)
        assert (built.stats['cache'], splits.stats['cache']) == ('rebuilt', 'hit')
        assert splits.sample_shape == shape and sum(splits.stats['split'].values()) == n
        train, val, test = make_loaders(splits, cfg)
        batch = next(iter(train))
        assert batch.dtype == torch.float32 and tuple(batch.shape[1:]) == shape
        assert sum(len(b) for b in val) == len(splits.val) and sum(len(b) for b in test) == len(splits.test)
        lines = []
        print_inputdata_stats(splits, log=lines.append)
        assert any('cache: hit' in l for l in lines) and any(l.strip().startswith('train') for l in lines)
    assert built.train.labels is None and splits.train.labels is None
    assert load_or_create_datasets(digits_cfg, log=quiet).train.labels.dtype == np.int64


def test_batches_resume_exactly_and_shard_by_rank(tmp_path):
    x = synthetic_images(103, 1, 4, 4)
    full = ArrayBatches(x, 8, shuffle=True, seed=3)
    epoch2 = list(full.iter_epoch(2))
    resumed = list(ArrayBatches(x, 8, shuffle=True, seed=3).iter_epoch(2, start=5))
    assert all(torch.equal(a, b) for a, b in zip(epoch2[5:], resumed)) and len(resumed) == len(epoch2) - 5
    assert sum(len(b) for b in epoch2) == 103
    shards = [ArrayBatches(x, 8, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and all(s.n_samples == 35 for s in shards)
    orders = [s.order(2) for s in shards]
    assert set(np.concatenate(orders).tolist()) == set(range(103))
    assert len(set(orders[0]) & set(orders[1])) <= 1   # disjoint apart from the padding that evens the shards


def test_zero_test_ratio_gives_an_empty_test_split(tmp_path):
    cfg = validate_configuration({'data': {'source': 'synthetic', 'cache_dir': str(tmp_path), 'split': {'train': 0.9, 'val': 0.1, 'test': 0.0},
                                           'synthetic': {'n_samples': 20, 'height': 8, 'width': 8}}})
    for expected in ('rebuilt', 'hit'):
        splits = load_or_create_datasets(cfg, log=quiet)
        assert splits.stats['cache'] == expected
        assert len(splits.test) == 0 and splits.test.sample_shape == (1, 8, 8) and len(splits.train) == 18
    train, val, test = make_loaders(splits, cfg)
    assert len(test) == 0 and list(test) == []
    print_inputdata_stats(splits, log=quiet)


def test_broad_glob_never_reads_the_cache_back(tmp_path):
    np.save(tmp_path/'a.npy', synthetic_images(4, 1, 8, 8))
    cfg = validate_configuration({'data': {'source': 'folder', 'raw_glob': str(tmp_path/'**'), 'cache_dir': str(tmp_path/'cache')}})
    first = load_or_create_datasets(cfg, log=quiet)
    second = load_or_create_datasets(cfg, log=quiet)
    assert first.stats['files'] == second.stats['files'] == 1 and second.stats['cache'] == 'hit'


def test_shape_filter_applies_to_built_in_sources_too(tmp_path):
    keep = validate_configuration({'data': {'cache_dir': str(tmp_path), 'filters': {'expected_shape': [1, 8, 8]}}})
    splits = create_filtered_split_datasets(keep, log=quiet)
    assert splits.stats['samples_kept'] == 1797 and splits.stats['removed']['shape'] == 0 and len(splits.train.labels) == 1437
    drop = validate_configuration({'data': {'source': 'synthetic', 'cache_dir': str(tmp_path), 'filters': {'expected_shape': [64, 64]}}})
    with pytest.raises(DataError, match='no samples left after the shape filter'): load_or_create_datasets(drop, log=quiet)


def test_rereading_files_gives_the_same_splits(raw, tmp_path, monkeypatch):
    "With no memory to hold first-pass arrays, the second pass reads the files again: same result."
    held = create_filtered_split_datasets(clean_config(raw, tmp_path), log=quiet)
    monkeypatch.setattr('ae_nb.data._hold_budget', lambda: 0)
    reread = create_filtered_split_datasets(clean_config(raw, tmp_path), log=quiet)
    for a, b in zip((held.train, held.val, held.test), (reread.train, reread.val, reread.test)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.index, b.index)
    assert held.norm == reread.norm and held.stats == reread.stats


def test_a_file_changing_between_passes_is_an_error(raw, tmp_path, monkeypatch):
    import ae_nb.data as data
    monkeypatch.setattr(data, '_hold_budget', lambda: 0)
    real, calls = data.read_raw_file, []
    def changing(path, *args):
        calls.append(path)
        a = real(path, *args)
        return a[:-1] if calls.count(path) > 1 and Path(path).name == 'stack.npy' else a
    monkeypatch.setattr(data, 'read_raw_file', changing)
    with pytest.raises(DataError, match=r'stack\.npy changed while the data set was being built'):
        create_filtered_split_datasets(clean_config(raw, tmp_path), log=quiet)


MEMORY = textwrap.dedent('''
    import json, sys, threading, time
    import ae_nb.data as data
    from ae_nb.config import validate_configuration
    data._hold_budget = lambda: 0   # as when the raw data are larger than memory
    def anon_mib():
        for line in open('/proc/self/status'):
            if line.startswith('RssAnon:'): return int(line.split()[1]) / 1024
    before, peak, done = anon_mib(), [0.0], threading.Event()
    def watch():
        while not done.is_set(): peak[0] = max(peak[0], anon_mib()); time.sleep(0.002)
    watcher = threading.Thread(target=watch); watcher.start()
    splits = data.load_or_create_datasets(validate_configuration(json.loads(sys.argv[1])), log=lambda m: None)
    done.set(); watcher.join()
    print(json.dumps({'peak_private_growth_mib': peak[0] - before, 'samples': sum(splits.stats['split'].values()),
                      'cache': splits.stats['cache']}))
''')


def test_building_from_files_never_holds_the_whole_data_set(tmp_path):
    "256 MiB of raw files are prepared with little private memory: the split arrays are memory maps in the cache."
    for day in range(4):
        folder = tmp_path/'raw'/f'2025_02_0{day + 1}'; folder.mkdir(parents=True)
        for f in range(8):
            np.save(folder/f'{f}.npy', synthetic_images(128, 1, 128, 128, seed=day * 8 + f))   # 8 MiB each
    cfg = validate_configuration({'data': {'source': 'folder', 'raw_glob': str(tmp_path/'raw'/'2025_*'), 'cache_dir': str(tmp_path/'cache')}})
    out = subprocess.run([sys.executable, '-c', MEMORY, json.dumps(cfg.model_dump(mode='json'))], capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['samples'] == 4 * 8 * 128 and result['cache'] == 'rebuilt'
    assert result['peak_private_growth_mib'] < 256 / 2, result   # the data set is 256 MiB; chunks and one file take ~65
