"""Training throughput of ae_nb's `TrainerAE` on the reference autoencoder, in the JSON-line format of the
external anchor benchmark (`anchor_bench.py`), plus the end-to-end wall time of the default `ae_train` run.

Reference setup (the anchor's): 1x64x64 inputs, a 4-stage conv autoencoder with channels 32-64-128-256,
stride 2, batch norm, ReLU, a 64-value code and a sigmoid output, batch 256, AdamW (lr 1e-3, weight
decay 0.01), MSE, 2048 training samples. Here the model is ae_nb's own `CNNAutoencoder` with those options
and the data come through ae_nb's normal path (`data.source: synthetic`, split 80/10/10, min-max
normalisation, memory-mapped cache, `make_loaders`), so the 2048 training samples come with 256 for
validation.

Variants (``--variant``, a comma list):

  ae_nb_trainer         `TrainerAE.train()` as `ae_train` runs it: validation, latest/best checkpoints
                        (atomic, hashed, fsynced), epoch log lines and the default W&B mode every epoch,
                        with the default `resources.performance` (every switch `auto`: timed, then applied)
  ae_nb_trainer_eager   the same with `resources.performance.compile: off` (the best eager path)
  ae_nb_trainer_nockpt  the same as ae_nb_trainer with its checkpoint writes stubbed out, to isolate their cost
  ae_nb_trainer_noval   the same as ae_nb_trainer without a validation set, to isolate the validation cost
  ae_nb_model_plain     a plain loop (random permutation, slice the in-memory tensor, step) on the same
                        `CNNAutoencoder`: separates the model's own cost from the trainer's overhead

Timing has the anchor's definition: the wall time of ``--steps`` optimizer steps after ``--warmup`` steps
(device-synchronised on CUDA), split into ``--windows`` equal windows. A step counts as done when the
trainer asks for its next batch, so the window holds everything the trainer does between steps,
including the end-of-epoch work (validation, checkpoints) of every epoch boundary inside the window.
Training stops at the step boundary after the window (`request_stop`), so no time outside it is spent.
The trainer is configured for ``--run-epochs`` epochs (default: just enough for the window on a CPU, 3000 on
CUDA: about six minutes of eager training, long enough for the trainer to try compiling), because its `auto` speed settings depend on the run's length: compiling is
tried only for runs long enough to repay it. The settings it chose are in each record (`speedups`), with the
time `setup_training` took to choose them (`setup_s`, outside the window).

``--compare FILE`` reads JSON lines of `anchor_bench.py --json-out FILE` (and of this script) and prints
medians and the ratios against the anchor's `raw_tensor`; ``--summary`` does only that.

``--mode end_to_end`` times the default `ae_train` on digits in a fresh results folder: once as a
subprocess (the user's wall time), once phase by phase in a child process with the functions `main` calls
(start-up = imports + config, data, training, report), and `ae_train --dry-run` (start-up only).

Examples:
  python bench/train_bench.py --device cpu --threads 2 --repeats 3
  python bench/train_bench.py --mode end_to_end
  python ../shared/bench/anchor_bench.py --device cpu --variant raw_tensor --json-out /tmp/b.jsonl; \\
    python bench/train_bench.py --device cpu --json-out /tmp/b.jsonl --compare /tmp/b.jsonl
"""
from __future__ import annotations

import argparse, gc, json, math, os, platform, shutil, statistics, subprocess, sys, tempfile, time, traceback
from pathlib import Path

VARIANTS = ('ae_nb_trainer', 'ae_nb_trainer_eager', 'ae_nb_trainer_nockpt', 'ae_nb_trainer_noval', 'ae_nb_model_plain')
ANCHOR_BASELINE = 'raw_tensor'


# ----------------------------------------------------------------------------------------------
# Timing: counts finished steps, reads the clock when warm-up ends and at each window boundary
# ----------------------------------------------------------------------------------------------
class Clock:
    def __init__(self, warmup:int, steps:int, windows:int, device):
        self.device, self.total, self.count, self.marks = device, warmup + steps, 0, []
        self.boundaries = sorted({warmup + round(steps * k / windows) for k in range(windows + 1)})

    def step_done(self):
        self.count += 1
        if self.count in self.boundaries:
            if self.device.type == 'cuda':
                import torch
                torch.cuda.synchronize(self.device)
            self.marks.append((self.count, time.perf_counter()))

    @property
    def finished(self)->bool: return self.count >= self.total

    def result(self, batch_size:int)->dict:
        if len(self.marks) != len(self.boundaries): raise RuntimeError(f"timing incomplete: {self.count} of {self.total} steps ran")
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        rates = [round((b[0] - a[0]) * batch_size / (b[1] - a[1]), 1) for a, b in zip(self.marks, self.marks[1:])]
        return {'samples_per_s': (s1 - s0) * batch_size / (t1 - t0), 'step_ms': 1e3 * (t1 - t0) / (s1 - s0),
                'timed_s': t1 - t0, 'window_samples_per_s': rates}


class TimedLoader:
    "Wraps a training loader: a step is finished when the trainer asks for the next batch (or the epoch's end)."
    def __init__(self, loader, clock:Clock, on_finished):
        self.loader, self.clock, self.on_finished = loader, clock, on_finished

    def __len__(self): return len(self.loader)
    def __getattr__(self, name): return getattr(self.loader, name)

    def iter_epoch(self, epoch:int, start:int=0):
        for batch in self.loader.iter_epoch(epoch, start):
            yield batch
            self.clock.step_done()
            if self.clock.finished: self.on_finished()


# ----------------------------------------------------------------------------------------------
# Setup: the reference configuration in ae_nb's own terms
# ----------------------------------------------------------------------------------------------
def reference_config(args, results_dir:str, epochs:int, compile:str='auto'):
    from ae_nb.config import validate_configuration
    n_total = math.ceil(args.n / 0.8)  # the 80/10/10 split leaves args.n samples for training
    return validate_configuration({
        'experiment': {'name': 'train_bench', 'results_dir': results_dir, 'seed': args.seed},
        'data': {'source': 'synthetic', 'batch_size': args.batch_size,
                 'synthetic': {'n_samples': n_total, 'channels': 1, 'height': args.size, 'width': args.size}},
        'model': {'embedding_dim': 64, 'channels': [32, 64, 128, 256], 'strides': [2, 2, 2, 2], 'kernel_size': 3,
                  'norm': 'batch', 'activation': 'relu', 'output_activation': 'sigmoid', 'head': args.head,
                  # without the head, the anchor's decoder exactly: transposed convolutions of kernel 4
                  'decoder_kernel_size': None if args.head else 4},
        'training': {'epochs': epochs, 'learning_rate': args.lr, 'weight_decay': 0.01, 'optimizer': 'adamw', 'loss': 'mse'},
        'resources': {'device': args.device, 'threads': args.threads, 'performance': {'compile': compile}},
        'logging': {'progress': 'never', 'wandb': {'mode': args.wandb}},
    })


def flops_per_sample(model, shape)->float:
    "Forward + backward FLOPs per sample (convolutions and linears), as the anchor counts them."
    import torch, torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    model = model.cpu().train()
    x = torch.rand(2, *shape)
    with FlopCounterMode(display=False) as counter: F.mse_loss(model(x), x).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def environment(args)->dict:
    import torch
    env = {'torch': torch.__version__, 'python': platform.python_version(), 'device': args.device,
           'threads': torch.get_num_threads()}
    if args.device.startswith('cuda'): env['device_name'] = torch.cuda.get_device_name(args.device)
    else:
        env['device_name'] = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')),
                                  platform.processor()) if os.path.exists('/proc/cpuinfo') else platform.processor()
    return env


def log_to_stderr(msg): print(f"  [trainer] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Variants: each returns (clock, final_loss, info)
# ----------------------------------------------------------------------------------------------
def run_trainer(args, splits, checkpoints:bool, compile:str='auto', validation:bool=True):
    import torch
    from ae_nb.data import make_loaders
    from ae_nb.model import model_from_config
    from ae_nb.trainer import TrainerAE, TrainingInterrupted, seed_everything
    work = tempfile.mkdtemp(prefix='ae_nb_train_bench_run_')
    try:
        probe = reference_config(args, work, 1)
        steps_per_epoch = len(make_loaders(splits, probe)[0])
        epochs = args.run_epochs or math.ceil((args.warmup + args.steps) / steps_per_epoch) + 1
        config = reference_config(args, work, epochs, compile)
        seed_everything(config.experiment.seed)
        model = model_from_config(config.model, splits.sample_shape)
        train_loader, val_loader, _ = make_loaders(splits, config)
        device = torch.device(args.device)
        clock = Clock(args.warmup, args.steps, args.windows, device)
        trainer = TrainerAE(model, config, None, val_loader if validation else None, norm=splits.norm, data_fingerprint=splits.fingerprint,
                            run_dir=Path(work)/'train_bench', log=log_to_stderr if args.verbose else (lambda m: None))
        trainer.train_loader = TimedLoader(train_loader, clock, trainer.request_stop)
        if not checkpoints: trainer.save_epoch_checkpoints = trainer.save_checkpoint = lambda *a, **k: None
        t0 = time.perf_counter()
        trainer.setup_training()
        setup_s = time.perf_counter() - t0
        try: trainer.train()
        except TrainingInterrupted: pass  # the stop requested right after the timing window
        finally: trainer.cleanup()
        files = sorted(p.name for p in trainer.checkpoint_dir.glob('*.pth')) if trainer.checkpoint_dir.is_dir() else []
        info = {'epochs_done': trainer.epoch, 'steps_per_epoch': steps_per_epoch, 'val_samples': len(splits.val) if validation else 0,
                'checkpoints_written': files, 'wandb': args.wandb, 'validation': validation, 'planned_epochs': epochs, 'setup_s': round(setup_s, 2),
                'speedups': {**trainer.speedups.settings(), 'how': trainer.speedups.how}, 'tuning_ms': trainer.speedups.timings_ms,
                'last_val_loss': trainer.history['val_loss'][-1] if trainer.history['val_loss'] else None}
        return clock, trainer.history['train_loss'][-1] if trainer.history['train_loss'] else None, info
    finally: shutil.rmtree(work, ignore_errors=True)


def run_model_plain(args, splits):
    import numpy as np, torch, torch.nn.functional as F
    from ae_nb.model import model_from_config
    from ae_nb.trainer import seed_everything
    config = reference_config(args, tempfile.gettempdir(), 1)
    seed_everything(config.experiment.seed)
    device = torch.device(args.device)
    model = model_from_config(config.model, splits.sample_shape).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    data = torch.from_numpy(np.array(splits.train.x, dtype=np.float32))
    g = torch.Generator().manual_seed(args.seed)
    n, bs = len(data), args.batch_size
    clock, loss = Clock(args.warmup, args.steps, args.windows, device), None
    while not clock.finished:
        perm = torch.randperm(n, generator=g)
        for i in range(n // bs):
            xb = data[perm[i * bs:(i + 1) * bs]].to(device)
            loss = F.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            clock.step_done()
            if clock.finished: break
    return clock, loss.item(), {}


def run_variant(name, args, splits, env, flops)->dict:
    rec = {'variant': name + ('_head' if args.head else ''), **env, 'batch_size': args.batch_size, 'n': len(splits.train),
           'input': list(splits.sample_shape), 'warmup': args.warmup, 'steps': args.steps}
    t0 = time.perf_counter()
    try:
        if name == 'ae_nb_model_plain': clock, loss, info = run_model_plain(args, splits)
        else: clock, loss, info = run_trainer(args, splits, checkpoints=name != 'ae_nb_trainer_nockpt',
                                              compile='off' if name == 'ae_nb_trainer_eager' else 'auto',
                                              validation=name != 'ae_nb_trainer_noval')
        rec.update(status='ok', **clock.result(args.batch_size), final_loss=loss, **info)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        rec.update(status='error', reason=f"{type(e).__name__}: {e}")
    finally: gc.collect()
    rec['wall_s'] = round(time.perf_counter() - t0, 2)
    if rec['status'] == 'ok':
        rec['gflop_per_sample'] = round(flops / 1e9, 4)
        rec['tflops'] = flops * rec['samples_per_s'] / 1e12
    return rec


# ----------------------------------------------------------------------------------------------
# Summary against the anchor
# ----------------------------------------------------------------------------------------------
def summarize(path:str):
    recs = [json.loads(l) for l in open(path) if l.strip().startswith('{')]
    rows = {}
    for r in recs:
        if r.get('status') == 'ok': rows.setdefault(r['variant'], []).append(r)
    if not rows: print("# no records"); return
    median = {v: statistics.median(r['samples_per_s'] for r in rs) for v, rs in rows.items()}
    bases = [b for b in (ANCHOR_BASELINE, 'lightning') if b in median]
    print(f"\n# {path}: medians over runs; ratios = samples/s / the anchor variant's median")
    print(f"{'variant':<24}{'runs':>5}{'samples/s':>11}{'min':>10}{'max':>10}{'step ms':>9}{'GFLOP/smp':>10}"
          f"{'TFLOP/s':>9}" + ''.join(f"{'vs ' + b:>15}" for b in bases))
    for v, rs in rows.items():
        sps, med = [r['samples_per_s'] for r in rs], median[v]
        gf = rs[0].get('gflop_per_sample', float('nan'))
        print(f"{v:<24}{len(rs):>5}{med:>11.1f}{min(sps):>10.1f}{max(sps):>10.1f}{1e3 * rs[0]['batch_size'] / med:>9.2f}"
              f"{gf:>10.4f}{gf * med / 1e3:>9.3f}" + ''.join(f"{med / median[b]:>15.3f}" for b in bases))
    if 'ae_nb_model_plain' in median:
        for v in ('ae_nb_trainer', 'ae_nb_trainer_eager', 'ae_nb_trainer_nockpt', 'ae_nb_trainer_noval'):
            if v in median: print(f"# {v} / ae_nb_model_plain (same model: the trainer's own overhead): {median[v] / median['ae_nb_model_plain']:.3f}")
    for v in ('ae_nb_trainer', 'ae_nb_trainer_eager'):
        if v in rows: print(f"# {v} speed settings: {rows[v][-1].get('speedups')} (chosen in {rows[v][-1].get('setup_s')} s)")


# ----------------------------------------------------------------------------------------------
# End to end: the default `ae_train` on digits
# ----------------------------------------------------------------------------------------------
def ae_train_command()->list[str]:
    exe = shutil.which('ae_train')
    return [exe] if exe else [sys.executable, '-c', 'from ae_nb.cli import cli_main; cli_main()']


def phases_child(results_dir:str):
    "Run what `ae_nb.cli.main` runs, phase by phase, in this fresh process; print one JSON line of timings."
    t = {}
    t0 = time.perf_counter()
    from ae_nb.cli import parse_arguments, resolve_config, setup_environment, auto_threads, setup_logging, resume_command
    from ae_nb.data import load_or_create_datasets, make_loaders, print_inputdata_stats
    from ae_nb.model import model_from_config
    from ae_nb.trainer import TrainerAE, get_training_params, log_hyperparameters
    from ae_nb.report import generate_full_report, print_final_results
    import torch
    t1 = time.perf_counter(); t['import_s'] = t1 - t0
    config = resolve_config(parse_arguments(['--override', f'experiment.results_dir={results_dir}']))
    log = setup_logging(config.logging.level)
    env = setup_environment(config)
    t2 = time.perf_counter(); t['config_setup_s'] = t2 - t1
    splits = load_or_create_datasets(config, log=log.info)
    train_loader, val_loader, test_loader = make_loaders(splits, config)
    print_inputdata_stats(splits, log=log.info)
    t3 = time.perf_counter(); t['data_s'] = t3 - t2
    model = model_from_config(config.model, splits.sample_shape)
    if config.resources.threads is None and (threads := auto_threads(model, config.data.batch_size)): torch.set_num_threads(threads)
    trainer = TrainerAE(model, config, train_loader, val_loader, norm=splits.norm, data_fingerprint=splits.fingerprint,
                        run_dir=env.run_dir, log=log.info)
    log_hyperparameters(config, get_training_params(config), log.info)
    trainer.setup_training()
    trainer.train()
    t4 = time.perf_counter(); t['training_s'] = t4 - t3
    t['epoch_time_sum_s'] = sum(trainer.history['time'])  # the trainer's own per-epoch step time
    results = generate_full_report(model, splits, config, history=trainer.history, run_dir=env.run_dir,
                                   checkpoint=trainer.checkpoint_dir/'best.pth', log=log.info)
    results['checkpoints'] = {'final': str(trainer.save_checkpoint('final'))} | results.get('checkpoints', {})
    print_final_results(results, log=log.info)
    trainer.cleanup()
    t5 = time.perf_counter(); t['report_s'] = t5 - t4
    t.update(in_process_total_s=t5 - t0, threads=torch.get_num_threads(), epochs=len(trainer.history['epoch']),
             steps_per_epoch=len(train_loader), train_samples=len(splits.train), test_mse=results.get('test', {}).get('mse')
             if isinstance(results.get('test'), dict) else None)
    print('PHASES ' + json.dumps(t), flush=True)


def timed_run(cmd, cwd)->tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, p


def end_to_end(args):
    import torch
    env = {'torch': torch.__version__, 'python': platform.python_version(), 'cpus': os.cpu_count(),
           'load_avg': [round(x, 2) for x in os.getloadavg()]}
    cmd = ae_train_command()
    recs = []
    for rep in range(args.repeats):
        # start-up alone: --dry-run resolves and prints the config, imports only the config layer
        dry = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as d:
                s, p = timed_run(cmd + ['--dry-run'], d)
                if p.returncode: raise RuntimeError(f"ae_train --dry-run failed: {p.stderr[-2000:]}")
                dry.append(s)
        s, p = timed_run([sys.executable, '-c', 'import time; t=time.perf_counter(); import ae_nb.cli, ae_nb.data, ae_nb.model, '
                          'ae_nb.trainer, ae_nb.report, torch; print(time.perf_counter()-t)'], None)
        imports_all = float(p.stdout.strip()) if p.returncode == 0 else None
        with tempfile.TemporaryDirectory() as d:  # the user's view: one process, fresh results folder
            wall, p = timed_run(cmd + ['--override', f'experiment.results_dir={d}/results'], d)
            if p.returncode: raise RuntimeError(f"ae_train failed ({p.returncode}): {p.stdout[-1500:]}{p.stderr[-1500:]}")
            reported = next((l for l in p.stdout.splitlines() if 'wall' in l.lower()), None)
        with tempfile.TemporaryDirectory() as d:  # the same run, phase by phase
            child, p = timed_run([sys.executable, __file__, '--mode', '_phases', '--results-dir', f'{d}/results'], d)
            if p.returncode: raise RuntimeError(f"phase run failed ({p.returncode}): {p.stdout[-1500:]}{p.stderr[-1500:]}")
            phases = json.loads(next(l for l in p.stdout.splitlines() if l.startswith('PHASES '))[7:])
        rec = {'variant': 'end_to_end', **env, 'repeat': rep, 'ae_train_wall_s': round(wall, 2),
               'ae_train_reported_line': reported, 'dry_run_s': [round(x, 2) for x in dry],
               'dry_run_median_s': round(statistics.median(dry), 2),
               'import_all_modules_s': round(imports_all, 2) if imports_all is not None else None,
               'phases_process_wall_s': round(child, 2),
               'phases': {k: round(v, 3) if isinstance(v, float) else v for k, v in phases.items()}}
        # interpreter start + anything outside the timed phases
        rec['phases']['interpreter_and_exit_s'] = round(child - phases['in_process_total_s'], 3)
        recs.append(rec)
        print(json.dumps(rec), flush=True)
        if args.json_out:
            with open(args.json_out, 'a') as f: f.write(json.dumps(rec) + '\n')
    return recs


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--mode', default='throughput', choices=['throughput', 'end_to_end', '_phases'])
    p.add_argument('--variant', default=','.join(VARIANTS), help='comma list of: ' + ', '.join(VARIANTS))
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:N')
    p.add_argument('--size', type=int, default=64, help='image height and width')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--n', type=int, default=None, help='training samples (default: 8192 on CUDA, 2048 on CPU, as the anchor)')
    p.add_argument('--warmup', type=int, default=None, help="warm-up steps (the anchor's default if unset)")
    p.add_argument('--steps', type=int, default=None, help="timed steps (the anchor's default if unset)")
    p.add_argument('--windows', type=int, default=3)
    p.add_argument('--run-epochs', type=int, default=None, help='epochs the trainer plans for (default: enough for the window on CPU, 3000 on CUDA)')
    p.add_argument('--repeats', type=int, default=1, help='run the variant list this many times, interleaved')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (resources.threads; default torch\'s)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--head', action='store_true', help="ae_nb's default model (model.head: true, 3x3 transposed convs); "
                   "without it the model is the anchor's architecture (head false, 4x4 transposed convs, same FLOPs)")
    p.add_argument('--wandb', default='offline', choices=['offline', 'disabled'], help="W&B mode (ae_nb's default: offline)")
    p.add_argument('--json-out', default=None, help='also append the JSON lines to this file')
    p.add_argument('--compare', default=None, help='JSON-lines file (anchor + this script) to summarise at the end')
    p.add_argument('--summary', action='store_true', help='only summarise --compare')
    p.add_argument('--results-dir', default=None, help=argparse.SUPPRESS)
    p.add_argument('--verbose', action='store_true', help="show the trainer's log lines on stderr")
    a = p.parse_args(argv)
    cuda = a.device.startswith('cuda')
    a.n = a.n or (8192 if cuda else 2048)
    a.run_epochs = a.run_epochs or (3000 if cuda else None)
    a.warmup = a.warmup if a.warmup is not None else (50 if cuda else max(3, 640 // a.batch_size))
    a.steps = a.steps if a.steps is not None else (500 if cuda else max(9, 4096 // a.batch_size))
    a.variants = [v.strip() for v in a.variant.split(',') if v.strip()]
    if set(a.variants) - set(VARIANTS): p.error(f"unknown variant(s) {sorted(set(a.variants) - set(VARIANTS))}")
    if a.warmup < 1 or a.steps < a.windows or a.windows < 1: p.error('need --warmup >= 1 and --steps >= --windows >= 1')
    return a


def main(argv=None)->int:
    args = parse_args(argv)
    if args.mode == '_phases': phases_child(args.results_dir); return 0
    if args.summary:
        if not args.compare: print('--summary needs --compare FILE', file=sys.stderr); return 2
        summarize(args.compare); return 0
    if args.mode == 'end_to_end': end_to_end(args); return 0
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    from ae_nb.data import load_or_create_datasets
    from ae_nb.model import model_from_config
    env = environment(args)
    data_dir = tempfile.mkdtemp(prefix='ae_nb_train_bench_data_')
    try:
        t0 = time.perf_counter()
        cfg = reference_config(args, data_dir, 1)
        splits = load_or_create_datasets(cfg, log=lambda m: None)
        print(f"# data: train {splits.train.x.shape} val {splits.val.x.shape} via data.source=synthetic "
              f"(cache {splits.stats.get('cache')}) in {time.perf_counter() - t0:.2f}s", file=sys.stderr, flush=True)
        flops = flops_per_sample(model_from_config(cfg.model, splits.sample_shape), splits.sample_shape)
        out = open(args.json_out, 'a') if args.json_out else None
        records = []
        for rep in range(args.repeats):
            for name in args.variants:
                rec = run_variant(name, args, splits, env, flops)
                rec['repeat'] = rep
                rec['load_avg'] = [round(x, 2) for x in os.getloadavg()]
                records.append(rec)
                line = json.dumps(rec)
                print(line, flush=True)
                if out: out.write(line + '\n'); out.flush()
        if out: out.close()
    finally: shutil.rmtree(data_dir, ignore_errors=True)
    if args.compare: summarize(args.compare)
    return 0 if all(r['status'] == 'ok' for r in records) else 1


if __name__ == '__main__':
    sys.exit(main())
