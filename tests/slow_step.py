"""`python slow_step.py [--until FILE] N ARGS...`: `ae_train ARGS...` whose training step N pauses after its update.

The pause lasts 3 s, or with `--until` until FILE exists. It sits where a step is most fragile: the optimizer has
changed the weights, the position does not count the step yet. Signals sent during it find the run mid-step, as a
slow step on a real model would; a run paused until its test says so holds its folder without using the CPU."""
import sys, time
from pathlib import Path

import ae_nb.trainer
from ae_nb.cli import cli_main

until = None
if sys.argv[1] == '--until': until = Path(sys.argv[2]); del sys.argv[1:3]
slow_at, real_step, taken = int(sys.argv.pop(1)), ae_nb.trainer.train_step, [0]

def train_step(*args, **kwargs):
    loss = real_step(*args, **kwargs)
    taken[0] += 1
    if taken[0] == slow_at:
        print(f"slow step {slow_at}: weights updated, position not yet", file=sys.stderr, flush=True)
        deadline = time.time() + (300 if until else 3)
        while time.time() < deadline and not (until and until.exists()): time.sleep(0.01)
    return loss

ae_nb.trainer.train_step = train_step
cli_main()
