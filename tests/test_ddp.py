"DDP on CPU (gloo, 2 processes): equivalence with one process, restart, SIGTERM, a killed rank, two nodes on loopback."
import os, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest
import torch

# Processes are started the way torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment),
# so each one's exit code and output can be checked; one test goes through torchrun itself.
# norm=group: BatchNorm statistics would be per process (a batch of B, not 2B), so the equivalence
# with one process of batch 2B holds only for a normalisation that does not mix samples.

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_args(results_dir, name, batch_size, epochs=2, n=640, extra=()):
    o = {'data.source': 'synthetic', 'data.synthetic.n_samples': n, 'data.synthetic.height': 16, 'data.synthetic.width': 16,
         'data.batch_size': batch_size, 'model.channels': '[8, 16]', 'model.embedding_dim': 4, 'model.norm': 'group',
         'training.epochs': epochs, 'training.plot_every': 0, 'logging.wandb.mode': 'disabled', 'logging.progress': 'never',
         'experiment.deterministic': 'true', 'resources.threads': 1, 'experiment.results_dir': results_dir,
         'experiment.name': name}
    return [a for k, v in o.items() for a in ('--override', f'{k}={v}')] + list(extra)


def start(args, world_size=2, cwd=None, port=None, timeout_s=60):
    "Start `world_size` processes of `python -m ae_nb.cli args`, as torchrun would."
    port = port or free_port()
    procs = []
    for rank in range(world_size):
        env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'AE_NB_DIST_TIMEOUT_S': str(timeout_s)}
        if world_size > 1:
            env.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                       WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
        procs.append(subprocess.Popen([sys.executable, '-m', 'ae_nb.cli', *args], cwd=cwd, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return procs


def finish(procs, timeout=180):
    "Exit codes and outputs of `procs`."
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [p.returncode for p in procs], outs


def checkpoint(path): return torch.load(path, map_location='cpu', weights_only=True)


# SGD, not AdamW: Adam divides each step by the root of the squared-gradient average, which turns rounding noise
# in near-zero gradients (a convolution's bias in front of GroupNorm has exactly zero gradient) into full-size
# steps; the two runs then differ by up to 0.02 in such weights. SGD keeps the difference at rounding level.
SGD = ['--override', 'training.optimizer=sgd', '--override', 'training.learning_rate=0.05']


def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(tmp_path):
    one = start(run_args(tmp_path, 'one', 32, extra=SGD), world_size=1)
    codes, outs = finish(one)
    assert codes == [0], outs[0]
    two = start(run_args(tmp_path, 'two', 16, extra=SGD))
    codes, outs = finish(two)
    assert codes == [0, 0], '\n'.join(outs)
    assert outs[1].strip() == '', outs[1]   # rank 1 is quiet
    a, b = (checkpoint(tmp_path/n/'checkpoints'/'final_checkpoint.pth') for n in ('one', 'two'))
    assert b['world_size'] == 2 and a['world_size'] == 1
    assert a['global_step'] == b['global_step'] > 0
    for key in ('train_loss', 'val_loss'):
        for x, y in zip(a['history'][key], b['history'][key], strict=True): assert abs(x - y) < 1e-5, (key, x, y)
    for k in a['model']: assert torch.allclose(a['model'][k], b['model'][k], atol=1e-5), k
    assert not (tmp_path/'two'/'report').exists() or (tmp_path/'two'/'report'/'metrics.json').is_file()


def wait_for(path, procs, timeout=120):
    deadline = time.time() + timeout
    while not path.exists() and all(p.poll() is None for p in procs) and time.time() < deadline: time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "the run ended before it could be interrupted"


def sigterm_one_rank_then_restart(tmp_path, compare_with_uninterrupted):
    args = lambda name, *extra: run_args(tmp_path, name, 16, epochs=3, n=6400, extra=extra)   # 200 steps (about 1 s) an epoch
    procs = start(args('run'))
    wait_for(tmp_path/'run'/'checkpoints'/'latest.pth', procs)
    time.sleep(0.3)                              # well inside the second epoch, far from its end
    procs[1].send_signal(signal.SIGTERM)         # the rank that writes nothing
    codes, outs = finish(procs)
    assert codes == [143, 143], '\n'.join(outs)
    emergency = checkpoint(tmp_path/'run'/'checkpoints'/'emergency.pth')
    assert emergency['world_size'] == 2 and emergency['step_in_epoch'] > 0
    assert emergency['accumulators']['per_rank'].shape == (2, 2)   # each rank's running loss, for an exact resume
    assert 'torchrun --nproc_per_node=2 -m ae_nb.cli' in outs[0]
    # a different number of processes cannot continue a half-done epoch: refused, by name
    codes, outs = finish(start(args('run', '--restart', 'auto'), world_size=1))
    assert codes == [1] and 'process(es)' in outs[0], outs[0]
    codes, outs = finish(start(args('run', '--restart', 'auto')))
    assert codes == [0, 0], '\n'.join(outs)
    assert 'resuming from' in outs[0] and 'emergency.pth' in outs[0]
    if not compare_with_uninterrupted: return
    codes, outs = finish(start(args('reference')))
    assert codes == [0, 0], '\n'.join(outs)
    ref, res = (checkpoint(tmp_path/n/'checkpoints'/'final_checkpoint.pth') for n in ('reference', 'run'))
    for k in ref['model']: assert torch.equal(ref['model'][k], res['model'][k]), k
    assert ref['history']['train_loss'] == res['history']['train_loss']


def test_sigterm_on_one_rank_stops_all_then_restart_resumes(tmp_path):
    sigterm_one_rank_then_restart(tmp_path, compare_with_uninterrupted=False)


@pytest.mark.slow
def test_ddp_restart_after_sigterm_equals_uninterrupted(tmp_path):
    sigterm_one_rank_then_restart(tmp_path, compare_with_uninterrupted=True)


def test_a_killed_rank_makes_the_other_exit_with_an_error(tmp_path):
    procs = start(run_args(tmp_path, 'killed', 16, epochs=50, n=1600))
    wait_for(tmp_path/'killed'/'checkpoints'/'latest.pth', procs)
    procs[1].kill()
    t0 = time.time()
    procs[0].wait(timeout=90)
    out = procs[0].communicate()[0]
    procs[1].communicate()
    assert procs[0].returncode not in (0, None), out
    assert time.time() - t0 < 90
    assert 'died or stopped answering' in out, out
    assert (tmp_path/'killed'/'checkpoints'/'emergency.pth').is_file()   # rank 0 stopped at a step boundary


def test_two_nodes_on_loopback(tmp_path):
    "Two torchrun invocations, one process each, meeting through the c10d rendezvous."
    port = free_port()
    cmd = lambda node: ['torchrun', '--nnodes=2', f'--node_rank={node}', '--nproc_per_node=1', '--rdzv-backend=c10d',
                        f'--rdzv-endpoint=127.0.0.1:{port}', '--rdzv-id=ae_nb_test', '-m', 'ae_nb.cli',
                        *run_args(tmp_path, 'nodes', 16)]
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'AE_NB_DIST_TIMEOUT_S': '60'}
    nodes = [subprocess.Popen(cmd(i), env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in (0, 1)]
    codes, outs = finish(nodes)
    assert codes == [0, 0], '\n'.join(outs)
    final = checkpoint(tmp_path/'nodes'/'checkpoints'/'final_checkpoint.pth')
    assert final['world_size'] == 2


@pytest.mark.slow
def test_a_hung_rank_makes_the_other_exit_after_the_timeout(tmp_path):
    "SIGSTOP (a hung process keeps its sockets open): the other gives up after AE_NB_DIST_TIMEOUT_S seconds."
    procs = start(run_args(tmp_path, 'hung', 16, epochs=50, n=1600), timeout_s=5)
    wait_for(tmp_path/'hung'/'checkpoints'/'latest.pth', procs)
    procs[1].send_signal(signal.SIGSTOP)
    t0 = time.time()
    try:
        procs[0].wait(timeout=60)
        out = procs[0].communicate()[0]
        assert procs[0].returncode == 1, out
        assert 'died or stopped answering' in out, out
        assert time.time() - t0 < 30
    finally:
        procs[1].kill(); procs[1].communicate()


def test_a_signal_handled_just_after_the_stop_check_waits_for_the_next_check(tmp_path, monkeypatch):
    "Every process must act on the agreed flag alone; a signal whose handler runs as the all-reduce returns is for the next check."
    import torch.distributed as dist
    sys.path.insert(0, str(Path(__file__).parent))
    from test_trainer import tiny
    from ae_nb.trainer import TrainerAE
    cfg, model, train_dl, val_dl = tiny(tmp_path)
    trainer = TrainerAE(model, cfg, train_dl, val_dl, log=lambda m: None)
    trainer.world_size, trainer.global_step = 2, 10                      # a check step of a 2-process run
    def all_reduce_then_signal(flag, op=None):                           # the peer saw no signal: MAX keeps ours
        trainer._handle_signal(signal.SIGTERM, None)                      # this process's handler runs right after
    monkeypatch.setattr(dist, 'all_reduce', all_reduce_then_signal)
    assert trainer._agreed_stop() is None                                 # the peer goes on training: so must we
    assert trainer._agreed_stop(every_step=True) == signal.SIGTERM        # the next check carries our signal to all
