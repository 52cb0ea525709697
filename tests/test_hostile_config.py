"Hostile or unrunnable configuration input is refused fast, by file:line or key, without a traceback."
import contextlib, io, json, os, random, re, subprocess, sys, textwrap, time

import numpy as np
import pytest
import torch

from ae_nb.cli import cli_main
from ae_nb.config import (MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES, ConfigError, ExperimentConfig,
                          check_runnable, load_config, parse_override, validate_configuration)
from ae_nb.model import model_from_config

DEEP = 20_000                # levels: PyYAML's recursive composer gave a RecursionError traceback
FAST = 2.0                   # seconds any refusal may take
PLAIN = ['--override', 'logging.wandb.mode=disabled']


def run_cli(*argv):
    "cli_main in-process: (exit code, stdout, stderr, seconds); anything but SystemExit fails the test."
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: cli_main(list(argv))
        except SystemExit as e: return e.code, out.getvalue(), err.getvalue(), time.perf_counter() - t0
    raise AssertionError(f"cli_main returned without exiting: {argv}")


def refused(*argv, naming):
    "Assert that `ae_train *argv` exits 1 within `FAST` seconds, names `naming` and prints no traceback."
    code, out, err, seconds = run_cli(*argv)
    assert code == 1, (code, out, err[:2000])
    assert 'Traceback' not in out + err, err[:2000]
    assert naming in err, err[:2000]
    assert seconds < FAST, f"{seconds:.2f}s"
    assert len(err) < 5000, f"{len(err)} characters of messages"
    return err


def validate_file(path): return refused('--validate-config', '--config', str(path), naming=f'{path.name}:')


def bomb(levels=9, width=9, indent=''):
    "YAML lines of a 'billion laughs': anchor `l0` holds `width` strings, each further level `width` aliases."
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return lines


def expanded_count(err):
    return int(re.search(r'expands to ([\d,]+) values', err).group(1).replace(',', ''))


# ---------------------------------------------------------------- nesting

@pytest.mark.parametrize('value', ['[' * DEEP + ']' * DEEP, '{a: ' * DEEP + '1' + '}' * DEEP], ids=['lists', 'mappings'])
def test_deep_nesting_in_a_file_is_refused_with_its_line(tmp_path, value):
    path = tmp_path/'deep.yaml'
    path.write_text(f"training:\n  epochs: 3\nmodel:\n  channels: {value}\n")
    err = validate_file(path)
    assert 'deep.yaml:4: model.channels' in err and f': nested deeper than {MAX_CONFIG_DEPTH} levels' in err, err


def test_deep_block_mappings_are_refused(tmp_path):
    path = tmp_path/'deep.yaml'
    path.write_text(''.join(f"{' ' * i}k{i}:\n" for i in range(200)) + ' ' * 200 + 'leaf: 1\n')
    err = validate_file(path)
    assert f'deep.yaml:{MAX_CONFIG_DEPTH + 1}: k0.k1.k2.k3...: nested deeper than' in err, err


def test_deep_nesting_in_an_override_is_refused_by_key():
    err = refused('--validate-config', '--override', 'model.channels=' + '[' * DEEP + ']' * DEEP,
                  naming='--override model.channels: nested deeper than')


def test_a_real_config_nests_far_less_than_the_limit():
    code, out, err, _ = run_cli('--validate-config', '--override', 'model.strides=[[1, 2], [2, 2]]')
    assert code == 0, err
    assert MAX_CONFIG_DEPTH >= 8


# ---------------------------------------------------------------- alias expansion ("billion laughs")

def test_alias_bomb_in_a_file_is_refused_with_its_size(tmp_path):
    path = tmp_path/'bomb.yaml'
    path.write_text('\n'.join(['anchors:'] + bomb(indent='  ') + ['logging:', '  wandb:', '    tags: *l8']) + '\n')
    err = validate_file(path)
    assert 'bomb.yaml:' in err and 'values through aliases' in err, err
    assert expanded_count(err) > 9 ** 9, err   # every level counted, the 9**9 strings at the bottom included


def test_alias_bomb_in_an_override_is_refused_by_key():
    levels = [f"&l0 [{', '.join(['lol'] * 9)}]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    err = refused('--validate-config', '--override', f"logging.wandb.tags=[{', '.join(levels)}]",
                  naming='--override logging.wandb.tags: expands to')
    assert expanded_count(err) > 9 ** 9, err


def test_a_value_that_contains_itself_is_refused(tmp_path):
    path = tmp_path/'loop.yaml'
    path.write_text("logging:\n  wandb:\n    tags: &t [a, *t]\n")
    err = validate_file(path)
    assert 'loop.yaml:3: logging.wandb.tags: alias *t refers to a value that contains it' in err, err


def test_many_plain_values_are_refused_too(tmp_path):
    path = tmp_path/'long.yaml'
    path.write_text(f"logging:\n  wandb:\n    tags: [{', '.join(['t'] * (MAX_CONFIG_VALUES + 10))}]\n")
    err = validate_file(path)
    assert f'values; at most {MAX_CONFIG_VALUES:,}' in err, err


def test_ordinary_aliases_and_merge_keys_still_work(tmp_path):
    path = tmp_path/'aliases.yaml'
    path.write_text(textwrap.dedent("""\
        training:
          <<: {epochs: 2, plot_every: 0}
          learning_rate: 0.001
        logging:
          wandb:
            tags: &tags [a, b]
        data:
          raw_glob: *tags
        """))
    code, out, err, _ = run_cli('--dry-run', '--config', str(path))
    assert code == 0, err
    assert 'epochs: 2' in out and 'raw_glob: [a, b]' in out, out


# ---------------------------------------------------------------- keys

def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    path = tmp_path/'dup.yaml'
    path.write_text("experiment:\n  name: a\ntraining:\n  epochs: 3\n  plot_every: 0\n  learning_rate: 0.01\n  epochs: 4\n")
    err = validate_file(path)
    assert 'dup.yaml:7: training.epochs: duplicate key (first at line 4)' in err, err


def test_a_section_written_twice_is_refused(tmp_path):
    path = tmp_path/'dup.yaml'
    path.write_text("training:\n  epochs: 3\nmodel:\n  kernel_size: 3\ntraining:\n  learning_rate: 0.1\n")
    err = validate_file(path)
    assert 'dup.yaml:5: training: duplicate key (first at line 1)' in err, err


def test_keys_equal_as_values_are_duplicates(tmp_path):
    path = tmp_path/'dup.yaml'                 # PyYAML reads both as the int 16: the later one would win
    path.write_text("data:\n  synthetic: {16: a, 0x10: b}\n")
    err = validate_file(path)
    assert 'dup.yaml:2: data.synthetic.0x10: duplicate key (first at line 2)' in err, err


def test_duplicate_key_in_an_override_is_refused_by_key():
    refused('--validate-config', '--override', 'data.split={train: 0.8, val: 0.1, train: 0.5}',
            naming='--override data.split.train: duplicate key')


@pytest.mark.parametrize('text', ["data:\n  ? [a, b]\n  : 1\n", "data:\n  {[a, b]: 1}\n", "data:\n  {{a: 1}: 1}\n"],
                         ids=['complex', 'flow-list', 'flow-mapping'])
def test_non_scalar_keys_are_refused(tmp_path, text):
    path = tmp_path/'keys.yaml'
    path.write_text(text)
    err = validate_file(path)
    assert 'keys.yaml:2: data: a key must be a plain value, not a' in err, err


# ---------------------------------------------------------------- size

def test_a_config_file_over_the_size_bound_is_refused_without_reading_it(tmp_path):
    path = tmp_path/'huge.yaml'
    with open(path, 'w') as f:
        f.write('training:\n  epochs: 3\n')
        f.truncate(64 * MAX_CONFIG_BYTES)     # 64 MiB, sparse: reading it whole would be the mistake
    err = validate_file(path)
    assert 'huge.yaml: config file is 64.0 MiB; a config file is at most 1 MiB' in err, err


@pytest.mark.skipif(not os.path.exists('/dev/zero'), reason="needs /dev/zero")
def test_an_endless_config_file_is_refused():
    err = refused('--validate-config', '--config', '/dev/zero', naming='/dev/zero: config file is more than 1 MiB')


def test_an_override_over_the_size_bound_is_refused():
    refused('--validate-config', '--override', 'experiment.name=' + 'x' * (MAX_CONFIG_BYTES + 1),
            naming='--override experiment.name: value is 1,048,577 characters')


# ---------------------------------------------------------------- values that validate but cannot run

@pytest.mark.parametrize('seed', [2 ** 32, 2 ** 64 - 1, 2 ** 64])
def test_seed_beyond_what_the_generators_take_is_refused(seed):
    refused('--validate-config', '--override', f'experiment.seed={seed}',
            naming='experiment.seed: Input should be less than or equal to 4294967295')


def test_the_largest_seed_is_taken_by_every_generator():
    from ae_nb.data import ArrayBatches
    from ae_nb.trainer import seed_everything
    top = 2 ** 32 - 1
    code, out, err, _ = run_cli('--validate-config', '--override', f'experiment.seed={top}')
    assert code == 0, err
    with torch.random.fork_rng(devices=[]):   # the old bound (none) let 2**64 - 1 through: epoch 1 overflowed
        states = random.getstate(), np.random.get_state()
        try: seed_everything(top)
        finally: random.setstate(states[0]); np.random.set_state(states[1])
    batches = ArrayBatches(np.zeros((10, 1, 2, 2), np.float32), 2, shuffle=True, seed=top)
    for epoch in (0, 1, 10 ** 6): assert sorted(batches.order(epoch)) == list(range(10))
    assert 'augmentation' not in ExperimentConfig.model_fields['seed'].description


def test_absurd_thread_counts_are_refused_by_the_schema():
    refused('--validate-config', '--override', 'resources.threads=100000',
            naming='resources.threads: Input should be less than or equal to 4096')


def test_threads_beyond_the_machine_are_refused_naming_its_cores(monkeypatch):
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    err = refused('--validate-config', '--override', 'resources.threads=17',
                  naming='--override: resources.threads: 17 threads on a machine with 2 CPU cores; at most 16 (8 per core)')
    code, out, err, _ = run_cli('--validate-config', '--override', 'resources.threads=16')
    assert code == 0, err


def test_loader_threads_beyond_the_machine_are_refused(monkeypatch):
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    refused('--validate-config', '--override', 'resources.num_workers=100000',
            naming='resources.num_workers: 100000 loader threads on a machine with 2 CPU cores')


def test_check_runnable_is_machine_specific_and_skipped_for_stored_configs():
    cfg = validate_configuration({'resources': {'threads': 64}}, runnable=False)
    assert check_runnable(cfg, cores=64) == []
    assert check_runnable(cfg, cores=4) == ['resources.threads: 64 threads on a machine with 4 CPU cores; at most 32 (8 per core)']
    validate_configuration({'resources': {'threads': 4096}})    # a plain dict (a checkpoint's config): schema only
    with pytest.raises(ConfigError, match='resources.threads'):
        validate_configuration({'resources': {'threads': 4096}}, runnable=True)


@pytest.mark.parametrize('kernel,stage', [(9, 'encoder stage 1 gets 4x4'), (31, 'encoder stage 0 gets 8x8')])
def test_kernel_wider_than_the_digits_is_refused(tmp_path, kernel, stage):
    path = tmp_path/'k.yaml'
    path.write_text(f"model:\n  channels: [16, 32]\n  kernel_size: {kernel}\n")
    err = validate_file(path)
    assert f'k.yaml:3: model.kernel_size: {kernel} is too large for 8x8 samples (data.source: digits)' in err, err
    assert stage in err and 'use kernel_size 7 or less' in err, err


def test_kernel_fits_every_stage_of_the_digits():
    for kernel in (1, 3, 5, 7):
        code, out, err, _ = run_cli('--validate-config', '--override', f'model.kernel_size={kernel}')
        assert code == 0, (kernel, err)


def test_kernel_wider_than_a_synthetic_source_is_refused():
    err = refused('--validate-config', '--override', 'data.source=synthetic', '--override', 'data.synthetic.height=16',
                  '--override', 'data.synthetic.width=16', '--override', 'model.kernel_size=31',
                  naming='--override: model.kernel_size: 31 is too large for 16x16 samples (data.synthetic)')
    assert 'encoder stage 1 gets 8x8' in err, err


def test_kernel_wider_than_a_folders_expected_shape_is_refused(tmp_path):
    path = tmp_path/'f.yaml'
    path.write_text("data:\n  source: folder\n  raw_glob: /nowhere/*.npy\n  filters:\n    expected_shape: [1, 6, 6]\n"
                    "model:\n  kernel_size: 9\n")
    err = validate_file(path)
    assert 'f.yaml:7: model.kernel_size: 9 is too large for 6x6 samples (data.filters.expected_shape)' in err, err


def test_strides_the_input_cannot_take_are_refused_in_validation():
    err = refused('--validate-config', '--override', 'model.channels=[8, 8, 8, 8]', '--override', 'model.strides=[2, 2, 2, 2]',
                  naming='model.strides: 8x8 samples (data.source: digits) are too small for these strides')
    refused('--validate-config', '--override', 'model.strides=[[2], 2]', naming='model: each stride must be a positive number or a [height, width] pair, got [2]')


def test_kernel_wider_than_data_only_known_at_run_time_is_a_clear_error(tmp_path):
    cfg = validate_configuration({'data': {'source': 'folder', 'raw_glob': str(tmp_path/'*.npy')}, 'model': {'kernel_size': 31}})
    with pytest.raises(ValueError, match=r'model.kernel_size: 31 is too large for samples of shape \(1, 8, 8\): '
                                         r'encoder stage 0 gets 8x8'):
        model_from_config(cfg.model, (1, 8, 8))
    assert model_from_config(cfg.model, (1, 64, 64)).sizes[1] == (32, 32)


def test_kernel_wider_than_a_folders_samples_stops_the_run_cleanly(tmp_path):
    np.save(tmp_path/'x.npy', np.random.default_rng(0).random((40, 8, 8), dtype=np.float32))
    code, out, err, seconds = run_cli(
        '--override', 'data.source=folder', '--override', f'data.raw_glob={tmp_path}/*.npy', '--override', 'data.layout=NHW',
        '--override', 'model.kernel_size=31', '--override', f'experiment.results_dir={tmp_path}/runs',
        '--override', 'logging.progress=never', '--override', 'resources.threads=1', *PLAIN)
    assert code == 1, (out, err)
    assert 'Traceback' not in out + err
    assert 'model.kernel_size: 31 is too large for samples of shape (1, 8, 8)' in out + err, out + err


# ---------------------------------------------------------------- a real process, with its memory

HOSTILE = {'deep.yaml': 'model:\n  channels: ' + '[' * DEEP + ']' * DEEP + '\n',
           'bomb.yaml': '\n'.join(['anchors:'] + bomb(indent='  ') + ['logging:', '  wandb:', '    tags: *l8']) + '\n',
           'dup.yaml': 'training:\n  epochs: 3\n  epochs: 4\n'}


def test_ae_train_validate_config_refuses_hostile_files_in_a_subprocess(tmp_path):
    for name, text in HOSTILE.items(): (tmp_path/name).write_text(text)
    for name in HOSTILE:
        t0 = time.perf_counter()
        r = subprocess.run(['ae_train', '--validate-config', '--config', str(tmp_path/name)], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        assert r.returncode == 1 and f'{name}:' in r.stderr and 'Traceback' not in r.stdout + r.stderr, r.stderr[:2000]
        assert time.perf_counter() - t0 < 10, name     # the interpreter's start and imports included


def test_hostile_files_take_little_time_and_memory(tmp_path):
    "Each refusal in a fresh interpreter: seconds and peak memory of that process alone."
    for name, text in HOSTILE.items(): (tmp_path/name).write_text(text)
    script = textwrap.dedent(f"""\
        import contextlib, io, json, resource, sys, time
        from ae_nb.cli import cli_main
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            try: cli_main(['--validate-config', '--config', sys.argv[1]])
            except SystemExit as e: code = e.code
        print(json.dumps({{'code': code, 'seconds': time.perf_counter() - t0, 'before_kib': before,
                           'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
        """)
    for name in HOSTILE:
        r = subprocess.run([sys.executable, '-c', script, str(tmp_path/name)], capture_output=True, text=True, timeout=60)
        m = json.loads(r.stdout.splitlines()[-1])
        assert m['code'] == 1, (name, r.stderr[-2000:])
        assert m['seconds'] < FAST, (name, m)
        assert m['peak_kib'] - m['before_kib'] < 100 * 1024, (name, m)   # under 100 MiB above the imports


def test_a_missing_glob_names_the_key_not_the_packaged_config(ae):
    r = ae('ae_train', '--override', 'data.source=folder', '--validate-config')
    assert r.returncode == 1 and "data.raw_glob: required when data.source is 'folder'" in r.stderr, r.stderr
    assert 'default_config.yaml' not in r.stderr and '<top level>' not in r.stderr, r.stderr


def test_a_run_without_a_name_is_named_after_its_data_source(ae):
    for source, name in [('digits', 'digits_ae'), ('synthetic', 'synthetic_ae')]:
        r = ae('ae_train', '--override', f'data.source={source}', '--dry-run')
        assert r.returncode == 0 and f"name: {name}" in r.stdout, r.stdout + r.stderr
    r = ae('ae_train', '--override', 'data.source=synthetic', '--override', 'experiment.name=mine', '--dry-run')
    assert 'name: mine' in r.stdout
