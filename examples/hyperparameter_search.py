"""Random hyperparameter search with early stopping: ``python examples/hyperparameter_search.py``.

Each trial is one task that trains a softmax-regression classifier by mini-batch SGD with its
own learning rate, batch size and L2 penalty, on a dataset put once in the object store (every
trial reads the same shared memory). After each epoch a trial reports its validation accuracy
to a ``Tracker`` actor, without waiting for an answer.

The driver launches every trial at once, then loops:

  * ``zactor.wait(..., timeout=)`` returns the trials that have finished, as they finish;
  * it reads the progress from the tracker and applies the median stopping rule: a trial whose
    best accuracy after a few epochs is below the median of the other trials at the same epoch
    is not worth finishing, and ``zactor.cancel`` stops it (``get`` on it then raises
    ``TaskCancelledError``); its CPU goes to the trials still queued.

``--plot PATH`` draws each trial's accuracy by epoch. The last line reads
``RESULT hyperparameter_search trials=... finished=... stopped=... best_accuracy=... best=...``.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

try:
    import zactor
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import zactor

from zactor.exceptions import TaskCancelledError  # noqa: E402

CLASSES, DIM, GRACE_EPOCHS = 5, 30, 3


def make_dataset(n_samples, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.3, size=(CLASSES, DIM))
    labels = rng.integers(0, CLASSES, size=n_samples)
    x = centres[labels] + rng.normal(size=(n_samples, DIM))
    split = n_samples * 4 // 5
    return {"x_train": x[:split], "y_train": labels[:split],
            "x_val": x[split:], "y_val": labels[split:]}


@zactor.remote
class Tracker:
    """Collects the accuracy each trial reaches after each epoch."""

    def __init__(self):
        self.history = {}

    def report(self, trial, accuracy):
        self.history.setdefault(trial, []).append(accuracy)

    def progress(self):
        return self.history


@zactor.remote
def train_trial(trial, config, data, epochs, tracker):
    """One trial. ``data`` arrives as a dict of read-only arrays in the store's memory."""
    rng = np.random.default_rng(trial)
    x, y = data["x_train"], data["y_train"]
    weights = rng.normal(scale=0.5, size=(DIM, CLASSES))  # a random start
    best = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), config["batch_size"]):
            batch = order[start:start + config["batch_size"]]
            logits = x[batch] @ weights
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            probs[np.arange(len(batch)), y[batch]] -= 1.0
            gradient = x[batch].T @ probs / len(batch) + config["l2"] * weights
            weights -= config["lr"] * gradient
        accuracy = float(np.mean(np.argmax(data["x_val"] @ weights, axis=1) == data["y_val"]))
        best = max(best, accuracy)
        tracker.report.remote(trial, accuracy)  # an actor call from a task; not awaited
    return best


def describe(config):
    return ",".join(f"{name}={value:.3g}" for name, value in config.items())


def should_stop(trial, history):
    """Median stopping rule: after GRACE_EPOCHS, stop a trial whose best accuracy so far is
    below the median accuracy that at least three other trials had at the same epoch."""
    mine = history.get(trial, [])
    epoch = len(mine)
    if epoch < GRACE_EPOCHS:
        return False
    others = [h[epoch - 1] for t, h in history.items() if t != trial and len(h) >= epoch]
    return len(others) >= 3 and max(mine) < statistics.median(others)


def plot(path, history, stopped):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'zactor[examples]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for trial, accuracies in sorted(history.items()):
        ax.plot(range(1, len(accuracies) + 1), accuracies, ":" if trial in stopped else "-",
                color="grey" if trial in stopped else None)
    ax.set(xlabel="epoch", ylabel="validation accuracy",
           title="trials (dotted: stopped early)")
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (a few seconds)")
    parser.add_argument("--address", help="a running cluster to join (default: start one)")
    parser.add_argument("--trials", type=int, help="configurations tried (default 40, small 12)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default 20, small 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of every trial's curve")
    args = parser.parse_args(argv)
    n_trials = args.trials or (12 if args.small else 40)
    epochs = args.epochs or (8 if args.small else 20)

    rng = np.random.default_rng(args.seed)  # random search: sample each hyperparameter
    configs = [{"lr": float(10 ** rng.uniform(-4, 1)),
                "batch_size": int(rng.choice([16, 32, 64, 128])),
                "l2": float(10 ** rng.uniform(-5, -1))} for _ in range(n_trials)]

    zactor.init(address=args.address)
    data = zactor.put(make_dataset(10_000 if args.small else 20_000))  # stored once
    tracker = Tracker.remote()
    pending = {train_trial.remote(i, cfg, data, epochs, tracker): i
               for i, cfg in enumerate(configs)}
    print(f"hyperparameter_search: {n_trials} trials of {epochs} epochs submitted")

    start, finished, stopped = time.perf_counter(), {}, set()
    while pending:
        # the trials that are done (finished or cancelled); gives up after 50 ms to look at
        # the progress of the others
        ready, _ = zactor.wait(list(pending), num_returns=1, timeout=0.05)
        for ref in ready:
            trial = pending.pop(ref)
            try:
                finished[trial] = zactor.get(ref)
                stopped.discard(trial)  # it ended before our cancel reached it
                print(f"  trial {trial:2d} finished: accuracy {finished[trial]:.3f} "
                      f"{describe(configs[trial])}")
            except TaskCancelledError:
                pass  # we stopped it below
        history = zactor.get(tracker.progress.remote())
        for ref, trial in pending.items():
            if trial not in stopped and should_stop(trial, history):
                zactor.cancel(ref)  # interrupts it if it runs, drops it if it is queued
                stopped.add(trial)
                print(f"  trial {trial:2d} stopped after {len(history[trial])} epochs: best "
                      f"{max(history[trial]):.3f} is below the median")
    elapsed = time.perf_counter() - start
    history = zactor.get(tracker.progress.remote())
    zactor.shutdown()

    best = max(finished, key=finished.get)
    print(f"{len(finished)} trials finished, {len(stopped)} stopped early, in {elapsed:.2f} s")
    print(f"best: trial {best} accuracy {finished[best]:.3f} with {describe(configs[best])}")
    if args.plot:
        plot(args.plot, history, stopped)
    print(f"RESULT hyperparameter_search trials={n_trials} finished={len(finished)} "
          f"stopped={len(stopped)} best_accuracy={finished[best]:.3f} best={describe(configs[best])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
