"""Synchronous and asynchronous parameter-server training: ``python examples/parameter_server.py``.

A softmax-regression classifier (numpy only) learns to tell apart Gaussian clusters in
``--dim`` dimensions. The weights live in one ``ParameterServer`` actor; each ``DataWorker``
actor makes its own shard of the data and computes gradients on mini-batches of it.

  synchronous:  every iteration, all workers compute a gradient on the same weights; the
                server averages them and takes one step. The driver only links refs: the
                gradients' refs go straight into the server's call, the new weights' ref
                straight into the workers' next calls.
  asynchronous: each worker starts on the weights the server had when it last finished;
                ``zactor.wait`` picks whichever gradient is ready first, the server applies
                it at once and that worker gets the newest weights. Nobody waits for the
                slowest worker, at the price of gradients computed on older weights.

Loss and accuracy on a held-out test set are printed as training goes; ``--plot PATH`` draws
both runs. The last line reads ``RESULT parameter_server sync_accuracy=... async_accuracy=...``.
"""

import argparse
import os
import sys
import time

import numpy as np

try:
    import zactor
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import zactor

CLASSES = 4


def make_data(n_samples, dim, seed):
    """Samples around CLASSES fixed centres (the same centres for every seed), with labels."""
    centres = np.random.default_rng(12345).normal(scale=0.5, size=(CLASSES, dim))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=n_samples)
    x = centres[labels] + rng.normal(scale=1.0, size=(n_samples, dim))
    return np.hstack([x, np.ones((n_samples, 1))]), labels  # a column of ones: the bias


def loss_and_gradient(weights, x, labels):
    """Cross-entropy of softmax(x @ weights), and its gradient with respect to weights."""
    logits = x @ weights
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean()
    probs[np.arange(len(labels)), labels] -= 1.0
    return loss, x.T @ probs / len(labels)


@zactor.remote
class ParameterServer:
    def __init__(self, dim, lr):
        self.weights = np.zeros((dim + 1, CLASSES))
        self.lr = lr

    def apply_gradients(self, *gradients):
        # the arguments were ObjectRefs: zactor resolved them to arrays before this call
        self.weights -= self.lr * np.mean(gradients, axis=0)
        return self.weights

    def get_weights(self):
        return self.weights


@zactor.remote
class DataWorker:
    def __init__(self, rank, dim, shard_size, batch_size):
        self.x, self.labels = make_data(shard_size, dim, seed=rank)  # made where it is used
        self.rng = np.random.default_rng(1000 + rank)
        self.batch_size = batch_size

    def compute_gradients(self, weights):
        batch = self.rng.integers(0, len(self.labels), size=self.batch_size)
        return loss_and_gradient(weights, self.x[batch], self.labels[batch])[1]


def evaluate(weights, test):
    x, labels = test
    loss = loss_and_gradient(weights, x, labels)[0]
    return loss, float(np.mean(np.argmax(x @ weights, axis=1) == labels))


def train_sync(workers, server, iterations, test, every):
    history, weights = [], server.get_weights.remote()
    for it in range(1, iterations + 1):
        gradients = [w.compute_gradients.remote(weights) for w in workers]  # refs in, refs out
        weights = server.apply_gradients.remote(*gradients)
        if it % every == 0 or it == iterations:
            loss, acc = evaluate(zactor.get(weights), test)
            history.append((it * len(workers), loss, acc))
            print(f"  sync  iteration {it:4d}: loss {loss:.4f} accuracy {acc:.3f}")
    return history


def train_async(workers, server, iterations, test, every):
    history, weights = [], server.get_weights.remote()
    in_flight = {w.compute_gradients.remote(weights): w for w in workers}
    for update in range(1, iterations * len(workers) + 1):  # as many gradients as sync
        ready, _ = zactor.wait(list(in_flight), num_returns=1)
        worker = in_flight.pop(ready[0])
        weights = server.apply_gradients.remote(ready[0])  # applied as soon as it arrives
        in_flight[worker.compute_gradients.remote(weights)] = worker  # back to work
        if update % (every * len(workers)) == 0 or update == iterations * len(workers):
            loss, acc = evaluate(zactor.get(weights), test)
            history.append((update, loss, acc))
            print(f"  async update    {update:4d}: loss {loss:.4f} accuracy {acc:.3f}")
    zactor.wait(list(in_flight), num_returns=len(in_flight))  # let the last ones finish
    return history


def plot(path, runs):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'zactor[examples]')")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, history in runs.items():
        grads, loss, acc = zip(*history)
        left.plot(grads, loss, label=name)
        right.plot(grads, acc, label=name)
    left.set(xlabel="gradients computed", ylabel="test loss")
    right.set(xlabel="gradients computed", ylabel="test accuracy")
    left.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (a few seconds)")
    parser.add_argument("--address", help="a running cluster to join (default: start one)")
    parser.add_argument("--workers", type=int, help="data workers (default 4, small 2)")
    parser.add_argument("--iterations", type=int, help="sync steps (default 500, small 20)")
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of loss and accuracy")
    args = parser.parse_args(argv)
    iterations = args.iterations or (20 if args.small else 500)
    n_workers = args.workers or (2 if args.small else 4)
    every = max(1, iterations // 6)
    test = make_data(5_000, args.dim, seed=-1 % 2**32)

    zactor.init(address=args.address)
    runs, accuracy = {}, {}
    workers = [DataWorker.remote(rank, args.dim, 10_000, 64) for rank in range(n_workers)]
    for mode, train in (("sync", train_sync), ("async", train_async)):
        print(f"{mode}: {n_workers} workers, {iterations * n_workers} gradients")
        server = ParameterServer.remote(args.dim, args.lr)  # fresh weights for each mode
        start = time.perf_counter()
        runs[mode] = train(workers, server, iterations, test, every)
        accuracy[mode] = runs[mode][-1][2]
        print(f"{mode}: {time.perf_counter() - start:.2f} s, final accuracy {accuracy[mode]:.3f}")
        del server  # an actor ends with its last handle
    zactor.shutdown()

    if args.plot:
        plot(args.plot, runs)
    print(f"RESULT parameter_server sync_accuracy={accuracy['sync']:.3f} "
          f"async_accuracy={accuracy['async']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
