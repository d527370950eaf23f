"""The node's object store in a dozen lines: run ``python examples/store_quickstart.py``.

Creates a 256 MB store in /dev/shm, puts a numpy array and a dict, gets them back (the array
without a copy: its memory is the shared segment, read-only), prints the store's figures and
removes the segment -- also when something fails on the way.
"""

import os
import sys

import numpy as np

try:
    import zactor  # noqa: F401  (installed: pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zactor.ids import JobID, ObjectID, TaskID  # noqa: E402
from zactor.store import ObjectStore  # noqa: E402

path = f"/dev/shm/zactor-quickstart-{os.getpid()}"
store = ObjectStore.create(path, 256 << 20)
try:
    task = TaskID.for_driver(JobID.from_int(1))
    array_id = ObjectID.for_put(task, 1).binary()
    dict_id = ObjectID.for_put(task, 2).binary()

    store.put(array_id, np.arange(10_000_000, dtype=np.float64))  # 80 MB, copied once
    store.put(dict_id, {"name": "quickstart", "scale": lambda x: 2 * x})

    array = store.get(array_id)  # zero copy
    segment = np.frombuffer(store.segment_view(), dtype=np.uint8)
    print("array sum:", array.sum(), "| shares the segment:", np.shares_memory(array, segment),
          "| writeable:", array.flags.writeable)
    info = store.get(dict_id)
    print("dict:", info["name"], info["scale"](21))

    # Another process would do: ObjectStore.attach(path).get(array_id)
    stats = store.stats()
    print(f"{stats['object_count']} objects, {stats['used_bytes'] / 1e6:.1f} MB used of "
          f"{stats['capacity'] / 1e6:.0f} MB, {stats['pinned_count']} pinned (the array)")
    del array
finally:
    store.destroy()
