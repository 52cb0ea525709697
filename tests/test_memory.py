"Data larger than memory: training reads the memory-mapped cache without copying it into the process."
import sys, tempfile, shutil
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'bench'))


@pytest.mark.slow
def test_training_from_the_cache_keeps_private_memory_bounded(tmp_path):
    "384 MiB of raw data: building the cache, then one epoch from it in a fresh process, sampled every 5 ms."
    from rss_bench import measure
    build, train = measure(384, tmp_path)
    assert train['cache'] == 'hit' and train['memmap'] == 'memmap' and train['steps'] > 0, train
    # private memory while training does not grow with the data (about 130 MiB of PyTorch buffers at 64 MiB and
    # at 256 MiB alike); what does grow is file-backed pages of the map, page cache the kernel can reclaim
    assert train['train_anon'] < 0.5 * train['dataset_mib'], train
    assert not list(tmp_path.iterdir()), "the bench removes its raw files and run folder"
