"""Reload a ~1 GB prepared data set: ae_nb's .npy + JSON cache (memory-mapped) against a pickle of the same arrays.

Usage: python bench/cache_bench.py [--gb 1.0] [--dir TMP/ae_nb_bench] [--keep] [--repeats 3]
Prints one JSON line per measurement, ending with `load_or_create_datasets` itself on a synthetic set of the
same size: the first call builds and caches it, the second is a cache hit. Every measurement runs in a fresh Python process, so peak RSS
and memory growth are those of the load alone; `cold` runs first evict the files from the page cache with
posix_fadvise(DONTNEED), `warm` runs read them from memory. `open` only loads; `pass` also reads every
sample once (the first epoch). Memory growth is split into anonymous pages (private copies, as a pickle makes)
and file-backed pages (memory-mapped reads: page cache that the kernel can drop under memory pressure).
"""
import argparse, json, os, shutil, tempfile, pickle, subprocess, sys, time
from pathlib import Path

CHILD = r'''
import json, os, pickle, sys, time
from pathlib import Path
import numpy as np
kind, path, pass_ = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == 'pass'
from ae_nb.data import read_cache
def mem():
    "Resident memory in MiB: total, anonymous (private copies), file-backed (page cache), and the peak."
    f = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
    kb = lambda k: int(f[k].split()[0]) / 1024 if k in f else None
    return {'rss': kb('VmRSS'), 'anon': kb('RssAnon'), 'file': kb('RssFile'), 'peak': kb('VmHWM')}
before = mem()
t0 = time.perf_counter()
if kind == 'npy_cache':
    splits = read_cache(path)
    arrays = [splits.train.x, splits.val.x, splits.test.x]
else:
    with open(path, 'rb') as fh: data = pickle.load(fh)
    arrays = [data['train_x'], data['val_x'], data['test_x']]
t_open = time.perf_counter() - t0
total = 0.0
if pass_:
    for a in arrays:
        for i in range(0, len(a), 4096): total += float(np.asarray(a[i:i + 4096]).sum())
t_all = time.perf_counter() - t0
after = mem()
print(json.dumps({'seconds_open': t_open, 'seconds_total': t_all, 'peak_rss_mib': after['peak'],
                  'peak_growth_mib': after['peak'] - before['rss'], 'anon_growth_mib': after['anon'] - before['anon'],
                  'file_backed_growth_mib': after['file'] - before['file'], 'samples': sum(len(a) for a in arrays), 'checksum': total}))
'''


PIPELINE = r'''
import json, sys, time
from ae_nb.config import validate_configuration
from ae_nb.data import load_or_create_datasets
status = lambda: {k: int(v.split()[0]) / 1024 for k, v in (l.split(':', 1) for l in open('/proc/self/status')) if k in ('VmRSS', 'VmHWM', 'RssAnon')}
before = status()
t0 = time.perf_counter()
splits = load_or_create_datasets(validate_configuration(json.loads(sys.argv[1])), log=lambda m: None)
seconds = time.perf_counter() - t0
after = status()
print(json.dumps({'cache': splits.stats['cache'], 'seconds': seconds, 'peak_growth_mib': after['VmHWM'] - before['VmRSS'],
                  'anon_growth_mib': after['RssAnon'] - before['RssAnon'], 'samples': sum(splits.stats['split'].values())}))
'''


def evict(paths):
    "Drop the files' pages from the page cache (clean pages; no root needed)."
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally: os.close(fd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--gb', type=float, default=1.0, help='size of the sample arrays in GiB')
    ap.add_argument('--dir', default=os.path.join(tempfile.gettempdir(), 'ae_nb_bench'), help='scratch folder (needs twice --gb free)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--keep', action='store_true', help='keep the scratch folder afterwards')
    args = ap.parse_args()
    import numpy as np
    from ae_nb.config import validate_configuration
    from ae_nb.data import ArrayDataset, DataSplits, fit_normalization, normalize, synthetic_images, write_cache
    root = Path(args.dir); root.mkdir(parents=True, exist_ok=True)
    n = int(args.gb * 2**30 / (64 * 64 * 4))
    t0 = time.perf_counter()
    x = synthetic_images(n, 1, 64, 64, seed=0)
    cut1, cut2 = int(n * .8), int(n * .9)
    norm = fit_normalization(x[:cut1])
    sets = [ArrayDataset(normalize(x[a:b], norm), None, np.stack([np.zeros(b - a, np.int64), np.arange(a, b)], 1), ['synthetic'])
            for a, b in ((0, cut1), (cut1, cut2), (cut2, n))]
    del x
    splits = DataSplits(*sets, norm=norm, fingerprint='bench', stats={'source': 'synthetic'})
    print(json.dumps({'event': 'generated', 'samples': n, 'gib': n * 64 * 64 * 4 / 2**30, 'seconds': time.perf_counter() - t0}), flush=True)
    t0 = time.perf_counter(); cache = write_cache(splits, root/'synthetic-bench'); t_cache = time.perf_counter() - t0
    pkl = root/'splits.pkl'
    t0 = time.perf_counter()
    with open(pkl, 'wb') as fh:
        pickle.dump({f'{s}_{k}': getattr(getattr(splits, s), k) for s in ('train', 'val', 'test') for k in ('x', 'index')}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush(); os.fsync(fh.fileno())
    t_pickle = time.perf_counter() - t0
    print(json.dumps({'event': 'written', 'npy_cache_seconds': t_cache, 'pickle_seconds': t_pickle,
                      'npy_cache_bytes': sum(f.stat().st_size for f in cache.iterdir()), 'pickle_bytes': pkl.stat().st_size}), flush=True)
    del splits, sets
    files = {'npy_cache': [str(f) for f in cache.iterdir()], 'pickle': [str(pkl)]}
    targets = {'npy_cache': cache, 'pickle': pkl}
    for cache_state in ('cold', 'warm'):
        for mode in ('open', 'pass'):
            for kind in ('npy_cache', 'pickle'):
                for r in range(args.repeats):
                    if cache_state == 'cold': evict(files[kind])
                    out = subprocess.run([sys.executable, '-c', CHILD, kind, str(targets[kind]), mode], capture_output=True, text=True, check=True)
                    print(json.dumps({'event': 'load', 'format': kind, 'page_cache': cache_state, 'mode': mode, 'repeat': r,
                                      **json.loads(out.stdout.strip().splitlines()[-1])}), flush=True)


    # the whole path: load_or_create_datasets builds the synthetic set (generate, filter, split, normalise, cache), then hits
    config = validate_configuration({'data': {'source': 'synthetic', 'cache_dir': str(root/'pipeline'),
                                              'synthetic': {'n_samples': n, 'channels': 1, 'height': 64, 'width': 64}}})
    for _ in range(2):
        out = subprocess.run([sys.executable, '-c', PIPELINE, json.dumps(config.model_dump(mode='json'))], capture_output=True, text=True, check=True)
        print(json.dumps({'event': 'load_or_create_datasets', **json.loads(out.stdout.strip().splitlines()[-1])}), flush=True)

    if not args.keep: shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__': main()
