"Run folders under attack: two runs on one folder, reruns, refused restarts, kills between writes, signals in every form."
import errno, fcntl, hashlib, json, os, pty, re, shutil, signal, subprocess, sys, termios, time
from pathlib import Path

import pytest
import torch

from conftest import run_ae

sys.path.insert(0, str(Path(__file__).parent))
from test_ddp import finish, free_port, run_args, start   # two processes, as torchrun starts them

# A small deterministic run; `n` samples set how long an epoch lasts (about 0.3 s per 3,200 on two cores).
# Without `report`, no samples are held out for a test set, so no report is written (a second saved per run).
def run_cmd(results_dir, name='k', epochs=3, n=640, report=False, **extra):
    split = {} if report else {'data.split.train': 0.9, 'data.split.test': 0.0}
    o = {'data.source': 'synthetic', 'data.synthetic.n_samples': n, 'data.synthetic.height': 16, **split,
         'data.synthetic.width': 16, 'data.batch_size': 16, 'model.channels': '[8, 16]', 'model.embedding_dim': 4,
         'training.epochs': epochs, 'training.plot_every': 0, 'training.checkpoint.save_every': 1,
         'logging.wandb.mode': 'disabled', 'logging.progress': 'never', 'experiment.deterministic': 'true',
         'resources.threads': 1, 'experiment.results_dir': str(results_dir), 'experiment.name': name, **extra}
    return ['ae_train'] + [a for k, v in o.items() for a in ('--override', f'{k}={v}')]


def popen(cmd, cwd, env=None, **kw):
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}, **kw)


def wait_for(path, proc, timeout=120):
    "Wait until `path` exists while `proc` runs; fail if it ends first."
    deadline = time.time() + timeout
    while not Path(path).exists():
        assert proc.poll() is None, f"the run ended first:\n{proc.communicate()[0]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def wait_for_line(proc, text, timeout=120):
    "Read `proc`'s output until a line contains `text`; return what was read."
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None: break
        seen.append(line)
        if text in line: return ''.join(seen)
    raise AssertionError(f"no line with {text!r}:\n{''.join(seen)}")


def tree(folder):
    "Every file under `folder` with its size, time and SHA-256: a snapshot to compare."
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(Path(folder).rglob('*')) if p.is_file()}


def state(path):
    "A checkpoint's contents."
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_state(a, b, what):
    "Checkpoints `a` and `b` hold the same training state bit for bit (when they were written may differ)."
    a, b = state(a), state(b)
    assert (a['epoch'], a['step_in_epoch'], a['global_step']) == (b['epoch'], b['step_in_epoch'], b['global_step']), what
    assert a['history']['train_loss'] == b['history']['train_loss'] and a['history']['val_loss'] == b['history']['val_loss'], what
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), f"{what}: {k}"
    for k in ('best_val', 'best_epoch'): assert a.get(k) == b.get(k), f"{what}: {k}"


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "The uninterrupted run that the interrupted ones must equal, and a longer one for signals mid-epoch."
    folder = tmp_path_factory.mktemp('reference')
    for name, n, report in (('k', 640, True), ('long', 6400, False)):
        r = run_ae(*run_cmd(folder, name, n=n, report=report), cwd=folder)
        assert r.returncode == 0, r.stdout + r.stderr
    return folder


# ---------------------------------------------------------------- one owner per run folder

def paused(tmp_path, cmd, step=2):
    "`cmd` (an `ae_train` command) whose training step `step` waits until the file `tmp_path/go` exists."
    return [sys.executable, str(Path(__file__).parent/'slow_step.py'), '--until', str(tmp_path/'go'), str(step)] + cmd[1:]


def test_a_second_run_on_a_busy_folder_is_refused_and_names_the_owner(tmp_path):
    first = popen(paused(tmp_path, run_cmd(tmp_path)), tmp_path)
    wait_for_line(first, 'weights updated, position not yet')   # training, and holding its folder
    t0 = time.time()
    second = run_ae(*run_cmd(tmp_path), cwd=tmp_path)
    out = second.stdout + second.stderr
    assert second.returncode == 1, out
    assert f"is in use by another run: pid {first.pid} on host " in out, out
    assert 'Traceback' not in out and time.time() - t0 < 30
    (tmp_path/'go').touch()
    out_first = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out_first
    assert not (tmp_path/'k'/'previous').exists()   # the second run moved nothing and wrote nothing
    log = (tmp_path/'k'/'train.log').read_text()
    assert log.count("ae_nb run 'k'") == 1
    assert not (tmp_path/'k'/'.ae_nb.lock').exists()   # released on exit


def test_two_runs_started_at_the_same_moment_one_trains_one_refuses(tmp_path):
    procs = [popen(run_cmd(tmp_path, report=True), tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = outs[[p.returncode for p in procs].index(1)]
    assert 'is in use by another run' in refused and 'Traceback' not in refused
    assert not (tmp_path/'k'/'previous').exists()
    ck = torch.load(tmp_path/'k'/'checkpoints'/'final_checkpoint.pth', weights_only=True)
    assert ck['epoch'] == 3 and (tmp_path/'k'/'report'/'metrics.json').is_file()


def test_the_lock_of_a_killed_run_is_taken_over_with_a_log_line(tmp_path):
    first = popen(run_cmd(tmp_path, n=3200), tmp_path)
    wait_for(tmp_path/'k'/'checkpoints'/'latest.pth', first)
    first.kill(); first.wait(30)
    assert (tmp_path/'k'/'.ae_nb.lock').exists()
    r = run_ae(*run_cmd(tmp_path, n=3200), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"its lock belonged to pid {first.pid}" in r.stdout and 'is no longer running' in r.stdout, r.stdout


def unshare_works():
    return shutil.which('unshare') and subprocess.run(
        ['unshare', '-u', '-p', '-f', '--mount-proc', 'true'], capture_output=True).returncode == 0


def on_other_host(cmd, host='node-b'):
    "`cmd` as if on another machine: its own host name and process-id space (Linux namespaces)."
    return ['unshare', '-u', '-p', '-f', '--mount-proc', 'sh', '-c', f'hostname {host} && exec "$@"', 'sh', *cmd]


@pytest.mark.skipif(not unshare_works(), reason="needs unshare (Linux namespaces, root)")
def test_a_run_on_another_host_respects_a_live_lock_and_takes_over_a_frozen_one(tmp_path):
    env = {'AE_NB_LOCK_HEARTBEAT_S': '0.2', 'AE_NB_LOCK_STALE_S': '2'}
    first = popen(paused(tmp_path, run_cmd(tmp_path)), tmp_path, env)
    wait_for_line(first, 'weights updated, position not yet')
    busy = subprocess.run(on_other_host(run_cmd(tmp_path)), cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert busy.returncode == 1 and f"pid {first.pid} on host {os.uname().nodename}" in busy.stdout, busy.stdout + busy.stderr

    first.send_signal(signal.SIGSTOP)   # a frozen owner: no more heartbeats
    time.sleep(3)
    second = popen(on_other_host(run_cmd(tmp_path, epochs=2)), tmp_path, env)
    wait_for_line(second, 'heartbeat stopped')
    first.send_signal(signal.SIGCONT)   # it wakes up in a folder that is no longer its own
    (tmp_path/'go').touch()
    out_first = first.communicate(timeout=120)[0]
    out_second = second.communicate(timeout=300)[0]
    assert second.returncode == 0, out_second
    assert first.returncode == 1 and 'taken over by another run' in out_first, out_first
    assert 'Emergency checkpoint' not in out_first
    ck = torch.load(tmp_path/'k'/'checkpoints'/'final_checkpoint.pth', weights_only=True)
    assert ck['config']['training']['epochs'] == 2   # the new owner's files, not overwritten by the old one
    assert not (tmp_path/'k'/'.ae_nb.lock').exists()


def test_a_busy_folder_stops_every_process_of_a_distributed_run(tmp_path):
    from ae_nb.runfolder import claim_run_folder
    with claim_run_folder(tmp_path/'busy'):
        t0 = time.time()
        codes, outs = finish(start(run_args(tmp_path, 'busy', 16), timeout_s=60), timeout=120)
    assert codes == [1, 1], outs
    assert 'is in use by another run' in outs[0] and time.time() - t0 < 60


# ---------------------------------------------------------------- reruns and refused restarts

def test_a_rerun_keeps_the_finished_run_whole_and_says_where(tmp_path):
    r = run_ae(*run_cmd(tmp_path, epochs=3, report=True, **{'training.plot_every': 1}), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    before = tree(tmp_path/'k')
    assert 'plots/reconstructions_e0003.png' in before and 'report/metrics.json' in before
    r = run_ae(*run_cmd(tmp_path, epochs=1, **{'training.plot_every': 1}), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    moved = re.search(r'held an earlier run: moved it to (\S+)', r.stdout)
    assert moved, r.stdout
    previous = Path(moved[1])
    assert previous.parent == tmp_path/'k'/'previous'
    assert tree(previous) == before   # the whole earlier run, bit for bit
    now = tree(tmp_path/'k')
    assert not any(k.startswith('plots/') and 'e0003' in k for k in now)   # no old plots mixed in
    assert 'epochs: 1' in (tmp_path/'k'/'config.yaml').read_text()


def test_a_refused_restart_changes_nothing_on_disk(tmp_path):
    r = run_ae(*run_cmd(tmp_path, epochs=1), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    before = tree(tmp_path/'k')
    r = run_ae(*run_cmd(tmp_path, epochs=2, **{'model.embedding_dim': 7}), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 1 and 'cannot resume this run' in r.stdout, r.stdout + r.stderr
    assert tree(tmp_path/'k') == before
    resume = re.search(r'Nothing was changed; to resume the run as it was trained: (.+)', r.stdout)
    assert resume, r.stdout
    again = subprocess.run(resume[1], shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and 'nothing to train' in again.stdout, again.stdout + again.stderr


def test_a_run_that_fails_on_its_data_leaves_the_folder_as_it_was(tmp_path):
    r = run_ae(*run_cmd(tmp_path, epochs=1), cwd=tmp_path)
    assert r.returncode == 0
    before = tree(tmp_path/'k')
    (tmp_path/'raw').mkdir(); (tmp_path/'raw'/'bad.npy').write_text('not an array')
    r = run_ae(*run_cmd(tmp_path, **{'data.source': 'folder', 'data.raw_glob': str(tmp_path/'raw')}), cwd=tmp_path)
    assert r.returncode == 1 and 'bad.npy: cannot read' in r.stdout, r.stdout + r.stderr
    assert tree(tmp_path/'k') == before


# ---------------------------------------------------------------- kills between writes, signals

def test_a_kill_between_latest_and_best_is_repaired_on_restart(tmp_path, reference):
    "Epoch 3 is the last and the best: killed after its latest.pth and before its best.pth, nothing later fixes it."
    p = popen(run_cmd(tmp_path, report=True), tmp_path, {'AE_NB_TEST_PAUSE_IN_SAVE': 'best:3'})
    wait_for_line(p, 'paused writing')
    p.kill(); p.communicate(timeout=30)
    ckpts = tmp_path/'k'/'checkpoints'
    assert state(ckpts/'best.pth')['epoch'] == 2 and state(ckpts/'latest.pth')['epoch'] == 3
    r = run_ae(*run_cmd(tmp_path, report=True), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ref = reference/'k'/'checkpoints'
    for name in ('best.pth', 'latest.pth', 'final_checkpoint.pth', 'restart_e0003.pth'):
        assert_same_state(ref/name, ckpts/name, name)
    metrics = json.loads((tmp_path/'k'/'report'/'metrics.json').read_text())
    assert metrics['training']['best_epoch'] == state(ckpts/'best.pth')['epoch'] == 3
    assert 'best.pth did not hold epoch 3' in r.stdout, r.stdout


def test_three_quick_ctrl_c_mid_step_abort_without_an_emergency_checkpoint(tmp_path, reference):
    cmd = [sys.executable, str(Path(__file__).parent/'slow_step.py'), '400'] + run_cmd(tmp_path, 'long', n=6400)[1:]
    p = popen(cmd, tmp_path)
    wait_for_line(p, 'weights updated, position not yet')
    for _ in range(3): p.send_signal(signal.SIGINT); time.sleep(0.05)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out
    assert 'aborted at once' in out and 'No emergency checkpoint' in out and 'latest.pth (end of epoch 1)' in out, out
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
    assert not (tmp_path/'long'/'checkpoints'/'emergency.pth').exists()
    r = run_ae(*run_cmd(tmp_path, 'long', n=6400), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_state(reference/'long'/'checkpoints'/'final_checkpoint.pth',
                      tmp_path/'long'/'checkpoints'/'final_checkpoint.pth', 'after an abort')


def test_signals_that_arrive_while_a_stopped_run_exits_are_harmless(tmp_path, reference):
    "The run stops at the first signal; the next ones land in its emergency save, clean-up or interpreter exit."
    p = popen(run_cmd(tmp_path, 'long', n=6400), tmp_path)
    wait_for(tmp_path/'long'/'checkpoints'/'latest.pth', p)
    time.sleep(0.1)
    for _ in range(3): p.send_signal(signal.SIGINT); time.sleep(0.05)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
    assert 'Emergency checkpoint:' in out or 'aborted at once' in out, out
    r = run_ae(*run_cmd(tmp_path, 'long', n=6400), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_state(reference/'long'/'checkpoints'/'final_checkpoint.pth',
                      tmp_path/'long'/'checkpoints'/'final_checkpoint.pth', 'after quick signals')


def test_signals_during_the_emergency_save_do_not_cut_it_short(tmp_path, reference):
    p = popen(run_cmd(tmp_path, 'long', n=6400), tmp_path, {'AE_NB_TEST_PAUSE_IN_SAVE': 'emergency:1:2'})
    wait_for(tmp_path/'long'/'checkpoints'/'latest.pth', p)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    wait_for_line(p, 'paused writing')
    p.send_signal(signal.SIGINT); time.sleep(0.1); p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 143, out
    assert 'already stopping' in out and 'Emergency checkpoint:' in out, out
    r = run_ae(*run_cmd(tmp_path, 'long', n=6400), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 0 and 'resuming from' in r.stdout and 'emergency.pth' in r.stdout, r.stdout
    assert_same_state(reference/'long'/'checkpoints'/'final_checkpoint.pth',
                      tmp_path/'long'/'checkpoints'/'final_checkpoint.pth', 'after SIGTERM')


def test_a_closed_terminal_stops_like_sigterm_and_resumes_exactly(tmp_path, reference):
    "The run's terminal is a real pseudo-terminal; closing it sends SIGHUP to the run, as ssh dropping would."
    master, slave = pty.openpty()
    def controlling_tty(): fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    cmd = run_cmd(tmp_path, 'long', n=6400, **{'logging.progress': 'auto'})
    p = subprocess.Popen(cmd, cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=controlling_tty, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    os.close(slave)
    try:
        wait_for(tmp_path/'long'/'checkpoints'/'latest.pth', p)
        time.sleep(0.3)
    finally: os.close(master)   # the terminal goes away
    assert p.wait(timeout=60) == 129
    log = (tmp_path/'long'/'train.log').read_text()
    assert 'SIGHUP' in log and 'Emergency checkpoint:' in log, log[-2000:]
    r = run_ae(*run_cmd(tmp_path, 'long', n=6400), '--restart', 'auto', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_state(reference/'long'/'checkpoints'/'final_checkpoint.pth',
                      tmp_path/'long'/'checkpoints'/'final_checkpoint.pth', 'after SIGHUP')


# ---------------------------------------------------------------- failures outside the loop

@pytest.mark.parametrize('where', ['/proc/ae_nb_runs', 'FILE/runs'])
def test_an_unusable_results_folder_is_named_before_any_data_work(tmp_path, where):
    (tmp_path/'FILE').write_text('a file, not a folder')
    where = where.replace('FILE', str(tmp_path/'FILE'))
    for extra in (['--validate-config'], []):
        t0 = time.time()
        r = run_ae(*run_cmd(where), *extra, cwd=tmp_path)
        assert r.returncode == 1 and 'experiment.results_dir' in r.stderr, r.stdout + r.stderr
        assert 'Traceback' not in r.stderr and time.time() - t0 < 20
    assert not (tmp_path/'cache').exists()


def test_a_report_that_cannot_be_written_says_training_finished(tmp_path, capsys, monkeypatch):
    import ae_nb.report
    from ae_nb.cli import cli_main
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, f"could not write {tmp_path}/k/report/metrics.json (No space left on device)")
    monkeypatch.setattr(ae_nb.report, 'generate_full_report', full_disk)
    with pytest.raises(SystemExit) as e: cli_main(run_cmd(tmp_path, epochs=1, report=True)[1:])
    out = capsys.readouterr().out
    assert e.value.code == 1
    final = tmp_path/'k'/'checkpoints'/'final_checkpoint.pth'
    assert f"Training finished (1 epochs), but the report could not be written" in out, out
    assert 'report/metrics.json' in out and str(final) in out and 'ae_report --checkpoint' in out, out
    assert 'Training failed' not in out
    assert state(final)['epoch'] == 1
