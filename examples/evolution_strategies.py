"""Evolution strategies on CartPole: ``python examples/evolution_strategies.py [--small]``.

The Ray paper's ES workload (after Salimans et al., 2017), scaled to one machine. A small numpy
policy (an MLP with ``--hidden`` tanh units, or linear with ``--hidden 0``) learns to balance
gymnasium's CartPole-v1. Each iteration:

  1. the driver sends the current parameters to every ``Worker`` actor, each with its share of
     the population's seeds;
  2. for each seed, a worker takes a perturbation ``eps`` from the shared noise table and plays
     one episode with ``theta + sigma * eps`` and one with ``theta - sigma * eps`` (antithetic
     pairs), returning only the scores and the table offsets: a few numbers per episode;
  3. the driver ranks the scores and moves ``theta`` towards the perturbations that did best.

The noise table is made once and ``zactor.put`` once; every worker maps the same read-only
store memory (no copy per worker), and the driver reads the same offsets in its own copy.

The search runs twice, on 1 worker and on one worker per CPU, from the same seeds: both learn
exactly the same policy, and the wall times are compared. Workers are placed with a placement
group (one CPU bundle each) where ``zactor.util.placement_group`` exists and the cluster can
reserve it, as plain actors holding one CPU otherwise (the output says which). The last line reads ``RESULT evolution_strategies iterations=...
score=... same=True ...``; ``--plot PATH`` draws the score against wall time for both runs.
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

try:
    import gymnasium as gym
except ImportError:
    sys.exit("evolution_strategies needs gymnasium: pip install 'zactor[examples]'")

try:  # placement groups, with Ray's names; fall back to plain actors where they do not exist
    from zactor.util.placement_group import placement_group, remove_placement_group
    from zactor.util.scheduling_strategies import PlacementGroupSchedulingStrategy
except ImportError:
    placement_group = None

OBS, ACTIONS = 4, 2  # CartPole: 4 observations, 2 actions (push left, push right)


def n_params(hidden):
    return (OBS + 1) * hidden + (hidden + 1) * ACTIONS if hidden else (OBS + 1) * ACTIONS


def act(theta, obs, hidden):
    x = np.append(obs, 1.0)  # the 1 is the bias input
    if hidden:
        x = np.append(np.tanh(x @ theta[:(OBS + 1) * hidden].reshape(OBS + 1, hidden)), 1.0)
        theta = theta[(OBS + 1) * hidden:]
    return int(np.argmax(x @ theta.reshape(-1, ACTIONS)))


@zactor.remote
class Worker:
    def __init__(self, noise, hidden, max_steps):
        # ``noise`` was passed as an ObjectRef: it arrives as a read-only view of the store
        self.noise, self.hidden = noise, hidden
        self.env = gym.make("CartPole-v1", max_episode_steps=max_steps)

    def noise_is_shared(self):
        # what the store hands out: a read-only view of its memory, not a private copy
        return not self.noise.flags.writeable and not self.noise.flags.owndata

    def episode(self, theta, seed):
        obs, _ = self.env.reset(seed=int(seed))
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = self.env.step(act(theta, obs, self.hidden))
            total, done = total + reward, terminated or truncated
        return total

    def evaluate(self, theta, seeds, sigma):
        """Antithetic pairs: for each seed, (table offset, score of +eps, score of -eps)."""
        results = []
        for seed in seeds:
            offset = int(np.random.default_rng(seed).integers(len(self.noise) - len(theta)))
            eps = self.noise[offset:offset + len(theta)]
            # both episodes of a pair start from the same state: only eps's sign differs
            results.append((offset, self.episode(theta + sigma * eps, seed),
                            self.episode(theta - sigma * eps, seed)))
        return results


def start_workers(n, noise_ref, args):
    """n workers of one CPU each: in a placement group (one bundle per worker) when this
    zactor has them, else plain actors. Returns (workers, the group or None)."""
    group = None
    if placement_group is not None:
        try:
            group = placement_group([{"CPU": 1}] * n, strategy="SPREAD")
            if not group.wait(timeout_seconds=60):  # every bundle's CPU reserved
                raise RuntimeError("its bundles were not reserved within 60 s")
        except RuntimeError as err:  # e.g. a cluster without a scheduler for groups
            print(f"  (no placement group: {err}; plain actors instead)")
            group = None
    if group is None:
        if placement_group is None:
            print("  (zactor.util.placement_group is not available: plain actors of 1 CPU)")
        return [Worker.options(num_cpus=1).remote(noise_ref, args.hidden, args.max_steps)
                for _ in range(n)], None
    return [Worker.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        placement_group=group, placement_group_bundle_index=i)).remote(
        noise_ref, args.hidden, args.max_steps) for i in range(n)], group


def centred_ranks(scores):
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(len(scores))
    return ranks / (len(scores) - 1) - 0.5


def train(workers, noise, args):
    n_workers = len(workers)
    # a random start (all zeros would pick the same action whatever the perturbation)
    theta = np.random.default_rng(args.seed).normal(scale=0.5, size=n_params(args.hidden))
    curve, start = [], time.perf_counter()
    for it in range(args.iterations):
        tic = time.perf_counter()
        seeds = np.array_split(np.arange(it * args.pairs, (it + 1) * args.pairs), n_workers)
        # one call per worker; theta is small, so it travels inside the call's message
        pairs = [p for part in zactor.get([w.evaluate.remote(theta, s.tolist(), args.sigma)
                                           for w, s in zip(workers, seeds)]) for p in part]
        offsets = [p[0] for p in pairs]
        scores = np.array([[p[1], p[2]] for p in pairs])
        ranks = centred_ranks(scores.ravel()).reshape(scores.shape)
        eps = np.stack([noise[o:o + len(theta)] for o in offsets])
        theta = theta + args.lr / (len(pairs) * args.sigma) * (ranks[:, 0] - ranks[:, 1]) @ eps
        curve.append((time.perf_counter() - start, scores.mean()))
        print(f"  [{n_workers} worker(s)] iteration {it + 1:3d}: mean score "
              f"{scores.mean():6.1f}, best {scores.max():5.0f}, "
              f"{2 * len(pairs)} episodes in {time.perf_counter() - tic:.2f} s")
    elapsed = time.perf_counter() - start
    # the score reached: theta itself, on episodes no perturbation was tried on
    final = zactor.get([workers[i % n_workers].episode.remote(theta, 10**6 + i)
                        for i in range(args.test_episodes)])
    return theta, float(np.mean(final)), elapsed, curve


def plot(path, curves):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'zactor[examples]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for n, curve in curves.items():
        ax.plot(*zip(*curve), "o-", label=f"{n} worker(s)")
    ax.set(xlabel="wall time (s)", ylabel="mean episode score", title="ES on CartPole-v1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (a few seconds)")
    parser.add_argument("--address", help="a running cluster to join (default: start one)")
    parser.add_argument("--iterations", type=int, help="default 20, small 6")
    parser.add_argument("--pairs", type=int,
                        help="antithetic pairs per iteration (default 48, small 8)")
    parser.add_argument("--hidden", type=int, default=0, help="hidden units (0: linear)")
    parser.add_argument("--sigma", type=float, default=0.3, help="perturbation scale")
    parser.add_argument("--lr", type=float, default=0.5, help="step size")
    parser.add_argument("--seed", type=int, default=0, help="of the starting parameters")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of score against time")
    args = parser.parse_args(argv)
    args.iterations = args.iterations or (6 if args.small else 20)
    args.pairs = args.pairs or (8 if args.small else 48)
    args.max_steps = 200 if args.small else 500  # CartPole-v1's own limit is 500
    args.test_episodes = 4 if args.small else 10

    zactor.init(address=args.address)
    cpus = int(zactor.cluster_resources()["CPU"])
    # the shared noise table: float32 normals, put in the store once for every worker
    noise = np.random.default_rng(0).standard_normal(
        250_000 if args.small else 25_000_000, dtype=np.float32)
    noise_ref = zactor.put(noise)
    print(f"evolution_strategies: {n_params(args.hidden)} parameters, {args.pairs} pairs x "
          f"{args.iterations} iterations, noise table {noise.nbytes / 1e6:.0f} MB")

    workers, group = start_workers(cpus, noise_ref, args)  # one per CPU, each holding it
    assert all(zactor.get([w.noise_is_shared.remote() for w in workers]))
    runs = {}
    for n in dict.fromkeys([1, cpus]):  # 1 worker, then one per CPU (once if that is 1)
        print(f"{n} worker(s):")
        runs[n] = train(workers[:n], noise, args)
        print(f"{n} worker(s): {runs[n][2]:.2f} s, score reached {runs[n][1]:.1f}")
    if group is not None:
        remove_placement_group(group)
    zactor.shutdown()

    theta, score, t1 = runs[1][:3]
    tn = runs[cpus][2]
    same = bool(np.array_equal(theta, runs[cpus][0]))
    print(f"1 worker: {t1:.2f} s; {cpus} workers: {tn:.2f} s; speed-up {t1 / tn:.2f}x; "
          f"same policy learnt: {same}")
    if args.small:
        print("(--small runs last about a second: too short for the speed-up to mean much)")
    if args.plot:
        plot(args.plot, {n: run[3] for n, run in runs.items()})
    print(f"RESULT evolution_strategies iterations={args.iterations} score={score:.1f} "
          f"cpus={cpus} speedup={t1 / tn:.2f} same={same} "
          f"placement_group={group is not None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
