"""Peak memory of building the memory-mapped cache and training one epoch from it, against the data set's size.

Usage: python bench/rss_bench.py [--mb 64 128 256] [--dir TMP] [--keep]
For each size, raw `.npy` files of that many MB are written into a temporary folder (in chunks: the parent never
holds them), then a fresh Python process builds the ae_nb cache from them (`data.source: folder`) and another
fresh one trains one epoch of a small autoencoder from that cache, sampling its memory from /proc every 5 ms. One JSON line per size:
`anon` is private memory (what a loaded copy of the data would cost), `file` is file-backed pages of the memory
map (page cache: the kernel reclaims it under memory pressure), `peak_rss` is the kernel's high-water mark.
All in MiB, as growth over the process's memory after its imports (`base_*`).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile
from pathlib import Path

import numpy as np

SIDE, FILES = 32, 16   # 32x32 single-channel float32 samples (4 KiB each), spread over 16 raw files

CHILD = r'''
import json, sys, threading, time
from pathlib import Path
import torch
from ae_nb.config import validate_configuration
from ae_nb.data import load_or_create_datasets, make_loaders
from ae_nb.model import model_from_config
from ae_nb.trainer import TrainerAE

def mem():
    f = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
    return {k: int(f[n].split()[0]) / 1024 for k, n in (('rss', 'VmRSS'), ('anon', 'RssAnon'), ('file', 'RssFile'), ('hwm', 'VmHWM'))}

peaks, phase, stop = {}, ['start'], threading.Event()
def sample():
    while not stop.is_set():
        m = mem(); p = peaks.setdefault(phase[0], {'anon': 0, 'file': 0})
        p['anon'], p['file'] = max(p['anon'], m['anon']), max(p['file'], m['file'])
        time.sleep(0.005)

raw, work, only_build = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == 'build'
torch.set_num_threads(1)
cfg = validate_configuration({
    'experiment': {'results_dir': str(work/'runs'), 'name': 'rss', 'seed': 0},
    'data': {'source': 'folder', 'raw_glob': f'{raw}/*.npy', 'layout': 'NHW', 'batch_size': 256, 'normalize': 'none',
             'filters': {'drop_constant': False}},
    'model': {'channels': [4, 8], 'embedding_dim': 4, 'norm': 'none'},
    'training': {'epochs': 1, 'plot_every': 0, 'checkpoint': {'save_every': 0}},
    'resources': {'threads': 1, 'device': 'cpu'}, 'logging': {'progress': 'never', 'wandb': {'mode': 'disabled'}}})
base = mem()
threading.Thread(target=sample, daemon=True).start()
phase[0] = 'build'
splits = load_or_create_datasets(cfg, log=lambda m: None)
phase[0] = 'train'
if only_build: trainer = type('NoTraining', (), {'global_step': 0})()
else:
    train, val, _ = make_loaders(splits, cfg)
    model = model_from_config(cfg.model, splits.sample_shape)
    trainer = TrainerAE(model, cfg, train, val, norm=splits.norm, run_dir=work/'runs'/'rss', log=lambda m: None)
    trainer.setup_training(); trainer.train()
time.sleep(0.02); stop.set()
end = mem()
print(json.dumps({'phase': 'build' if only_build else 'cache hit + 1 epoch', 'cache': splits.stats.get('cache'), 'samples': len(splits.train) + len(splits.val) + len(splits.test), 'steps': trainer.global_step,
                  'memmap': type(splits.train.x).__name__, 'base_rss': round(base['rss'], 1), 'base_anon': round(base['anon'], 1),
                  **{f'{ph}_{k}': round(v - base[k], 1) for ph, p in peaks.items() if ph != 'start' for k, v in p.items()},
                  'peak_rss': round(end['hwm'] - base['rss'], 1)}))
'''


def write_raw(folder:Path, mb:float)->int:
    "Write `mb` MiB of float32 (N, 32, 32) samples into FILES .npy files, chunk by chunk; return the sample count."
    folder.mkdir(parents=True, exist_ok=True)
    per_file = max(1, int(mb * 2**20 / (SIDE * SIDE * 4) / FILES))
    rng = np.random.default_rng(0)
    for i in range(FILES):
        a = np.lib.format.open_memmap(folder/f'part{i:03d}.npy', mode='w+', dtype=np.float32, shape=(per_file, SIDE, SIDE))
        for s in range(0, per_file, 1024): a[s:s + 1024] = rng.random((min(1024, per_file - s), SIDE, SIDE), dtype=np.float32)
        a.flush(); del a
    return per_file * FILES


def measure(mb:float, root:Path)->dict:
    "Build and train in a fresh process on `mb` MiB of raw data; the child's JSON line, with the size added."
    raw, work = root/f'raw_{mb:g}', root/f'work_{mb:g}'
    n = write_raw(raw, mb)
    lines = []
    for what in ('build', 'train'):   # two fresh processes: build the cache, then train from it (a cache hit)
        r = subprocess.run([sys.executable, '-c', CHILD, str(raw), str(work), what], capture_output=True, text=True, timeout=1800)
        if r.returncode: raise RuntimeError(f"child failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        lines.append({'dataset_mib': round(n * SIDE * SIDE * 4 / 2**20, 1), **json.loads(r.stdout.strip().splitlines()[-1])})
    shutil.rmtree(raw); shutil.rmtree(work)
    return lines


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--mb', type=float, nargs='+', default=[64, 128, 256], help="data set sizes in MiB")
    p.add_argument('--dir', help="where the temporary files go (default: the system temp folder)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix='ae_nb_rss_', dir=args.dir))
    try:
        for mb in args.mb:
            for line in measure(mb, root): print(json.dumps(line), flush=True)
    finally: shutil.rmtree(root, ignore_errors=True)
