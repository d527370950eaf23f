"""Word count as a map-reduce over generated text: ``python examples/mapreduce.py [--small]``.

The driver makes a seeded corpus (words drawn from a made-up vocabulary with a Zipf-like
distribution) and puts each chunk of documents in the object store. Then three stages run as
tasks, connected only by ObjectRefs:

  map:     one ``mapper`` task per chunk; it submits one ``count_document`` sub-task per
           document (nested tasks), merges their counts and splits the words into one
           partition per reducer (a task with ``num_returns=R`` returns R refs);
  shuffle: reducer r receives partition r of every mapper, as refs the driver never reads;
  reduce:  each ``reducer`` task adds up the counts of its words.

The result is checked against ``collections.Counter`` run on the same text in the driver.
The last line reads ``RESULT mapreduce words=... distinct=... top=WORD:COUNT match=True``.
"""

import argparse
import collections
import os
import sys
import time
import zlib

import numpy as np

try:
    import zactor
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import zactor


def make_corpus(n_docs, words_per_doc, seed=0):
    """Seeded documents of ``words_per_doc`` words; a few words are common, most are rare."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "ri", "to", "ne", "mu", "sa", "lo", "vi", "de", "po", "zu", "he"]
    vocabulary = rng.permutation(sorted({"".join(rng.choice(syllables, size=rng.integers(1, 4)))
                                         for _ in range(3_000)}))
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)  # Zipf: the k-th word ~ 1/k
    weights /= weights.sum()
    return [" ".join(rng.choice(vocabulary, size=words_per_doc, p=weights))
            for _ in range(n_docs)]


def partition_of(word, n_partitions):
    # a hash that is the same in every process (Python's hash() of a str is salted per process)
    return zlib.crc32(word.encode()) % n_partitions


@zactor.remote
def count_document(document):
    return collections.Counter(document.split())


@zactor.remote
def mapper(documents, n_reducers):
    """Counts the words of its chunk with one sub-task per document, then partitions them."""
    # a task can submit tasks; while it waits in get() its CPU goes to the sub-tasks
    counts = collections.Counter()
    for partial in zactor.get([count_document.remote(doc) for doc in documents]):
        counts.update(partial)
    partitions = [{} for _ in range(n_reducers)]
    for word, n in counts.items():
        partitions[partition_of(word, n_reducers)][word] = n
    return tuple(partitions)  # num_returns=n_reducers: one ObjectRef per partition


@zactor.remote
def reducer(*partitions):
    """Receives partition r of every mapper (the refs were resolved to dicts) and adds them."""
    total = collections.Counter()
    for part in partitions:
        total.update(part)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (a few seconds)")
    parser.add_argument("--address", help="a running cluster to join (default: start one)")
    parser.add_argument("--docs", type=int, help="documents (default 2000, small 200)")
    parser.add_argument("--words-per-doc", type=int, default=500)
    parser.add_argument("--mappers", type=int, default=8)
    parser.add_argument("--reducers", type=int, default=4)
    args = parser.parse_args(argv)
    n_docs = args.docs or (200 if args.small else 2_000)

    corpus = make_corpus(n_docs, args.words_per_doc)
    print(f"mapreduce: {n_docs} documents x {args.words_per_doc} words, "
          f"{args.mappers} mappers, {args.reducers} reducers")

    zactor.init(address=args.address)
    start = time.perf_counter()
    # put each chunk once: a mapper gets a ref, and the chunk is resolved in its worker
    step = -(-n_docs // args.mappers)
    chunks = [zactor.put(corpus[i:i + step]) for i in range(0, n_docs, step)]

    # map: each call returns a list of R refs at once; nothing has run yet
    map_outputs = [mapper.options(num_returns=args.reducers).remote(chunk, args.reducers)
                   for chunk in chunks]
    # shuffle + reduce: reducer r gets partition r of every mapper, passed as refs; each
    # reducer starts as soon as all its partitions exist, without the driver in between
    reduced = [reducer.remote(*[outputs[r] for outputs in map_outputs])
               for r in range(args.reducers)]
    print(f"submitted {len(map_outputs)} map and {len(reduced)} reduce tasks; waiting")

    counts = collections.Counter()
    for r, part in enumerate(zactor.get(reduced)):
        print(f"  reducer {r}: {len(part)} distinct words, {sum(part.values())} in all")
        counts.update(part)
    elapsed = time.perf_counter() - start
    zactor.shutdown()

    expected = collections.Counter(word for doc in corpus for word in doc.split())
    match = counts == expected
    (top, top_n), = counts.most_common(1)
    print(f"counted {sum(counts.values())} words in {elapsed:.2f} s; most common: "
          f"{counts.most_common(5)}; same as collections.Counter: {match}")
    print(f"RESULT mapreduce words={sum(counts.values())} distinct={len(counts)} "
          f"top={top}:{top_n} match={match}")
    return 0 if match else 1


if __name__ == "__main__":
    sys.exit(main())
