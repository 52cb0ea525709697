"""Batches from an in-memory or memory-mapped (N, C, H, W) array: ae_nb's sliced `ArrayBatches` against a
`torch.utils.data.DataLoader` over a per-sample Dataset (one `__getitem__` and one collate per sample).

Usage: python bench/loader_bench.py [--samples 16384] [--size 64] [--batch-size 64] [--dir TMP/ae_nb_loader_bench] [--keep]
Prints one JSON line per loader: samples per second over one shuffled epoch (the best of --repeats).
"""
import argparse, json, os, shutil, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ae_nb.data import ArrayBatches, synthetic_images


class PerSample(Dataset):
    "The usual Dataset: one sample per `__getitem__`, collated into batches by the DataLoader."
    def __init__(self, x): self.x = x
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return torch.from_numpy(np.array(self.x[i], dtype=np.float32))


def epoch_rate(make_iter, n, repeats):
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter(); seen = 0
        for batch in make_iter(): seen += len(batch)
        assert seen >= n - 64, seen
        best = min(best, time.perf_counter() - t0)
    return n / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--samples', type=int, default=16384)
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--dir', default=os.path.join(tempfile.gettempdir(), 'ae_nb_loader_bench'))
    ap.add_argument('--keep', action='store_true', help='keep the scratch folder afterwards')
    args = ap.parse_args()
    root = Path(args.dir); root.mkdir(parents=True, exist_ok=True)
    x = synthetic_images(args.samples, 1, args.size, args.size)
    np.save(root/'x.npy', x)
    arrays = {'memory': x, 'memmap': np.load(root/'x.npy', mmap_mode='r')}
    n, bs = args.samples, args.batch_size
    for storage, a in arrays.items():
        loaders = {
            'ArrayBatches': lambda: ArrayBatches(a, bs, shuffle=True, seed=0),
            'ArrayBatches_2_threads': lambda: ArrayBatches(a, bs, shuffle=True, seed=0, num_workers=2),
            'DataLoader_per_sample': lambda: DataLoader(PerSample(a), bs, shuffle=True, generator=torch.Generator().manual_seed(0)),
            'DataLoader_per_sample_2_workers': lambda: DataLoader(PerSample(a), bs, shuffle=True, num_workers=2,
                                                                  generator=torch.Generator().manual_seed(0)),
        }
        for name, make in loaders.items():
            rate = epoch_rate(lambda: iter(make()), n, args.repeats)
            print(json.dumps({'storage': storage, 'loader': name, 'samples': n, 'sample_shape': [1, args.size, args.size],
                              'batch_size': bs, 'samples_per_second': round(rate)}), flush=True)

    if not args.keep: shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__': main()
