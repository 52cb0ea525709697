"""`python slow_step.py N ARGS...`: `ae_train ARGS...` whose training step N lasts 3 s after its update.

The pause sits where a step is most fragile: the optimizer has changed the weights, the position does not count
the step yet. Signals sent during it find the run mid-step, as a slow step on a real model would."""
import sys, time

import ae_nb.trainer
from ae_nb.cli import cli_main

slow_at, real_step, taken = int(sys.argv.pop(1)), ae_nb.trainer.train_step, [0]

def train_step(*args, **kwargs):
    loss = real_step(*args, **kwargs)
    taken[0] += 1
    if taken[0] == slow_at:
        print(f"slow step {slow_at}: weights updated, position not yet", file=sys.stderr, flush=True)
        time.sleep(3)
    return loss

ae_nb.trainer.train_step = train_step
cli_main()
