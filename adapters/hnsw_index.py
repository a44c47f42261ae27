"""The similarity index behind ``bot.vectors.VectorIndex``: hnswlib's in-process HNSW graph.

Chosen after measuring usearch, hnswlib and faiss-cpu (README, "Similar conversations"):
hnswlib and usearch found the same neighbours as fast, faiss's HNSW index cannot remove a
vector (forgetting a customer must), and usearch 2.26 crashes the process when ONNX Runtime
(the triage encoder) is imported after it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import hnswlib
import numpy as np

from bot.vectors import Vectors

#: Graph links per node and candidate list sizes. At 1,000,000 clustered vectors (bench.similar)
#: a search breadth of 64 found 0.93 of the true top 5, 128 found 0.97 in 0.4 ms (p99 0.8 ms).
LINKS = 16
EF_CONSTRUCTION = 128
EF_SEARCH = 128
_FIRST_CAPACITY = 1024


class HnswIndex:
    """Inner-product HNSW over float32 vectors keyed by message id.

    A removed vector is marked deleted (never found again) and its slot is reused by the
    next vector added. One lock keeps adds, removals and the growing of the index apart from
    searches.
    """

    def __init__(self, dimensions: int, *, threads: int | None = None) -> None:
        self._index = hnswlib.Index(space="ip", dim=dimensions)
        self._index.init_index(
            max_elements=_FIRST_CAPACITY,
            ef_construction=EF_CONSTRUCTION,
            M=LINKS,
            allow_replace_deleted=True,
        )
        self._index.set_ef(EF_SEARCH)
        self._index.set_num_threads(threads or os.cpu_count() or 1)
        self._keys: set[int] = set()
        self._free = 0
        self._lock = threading.Lock()

    def add(self, keys: Sequence[int], vectors: Vectors) -> None:
        with self._lock:
            fresh = [i for i, key in enumerate(keys) if key not in self._keys]
            if not fresh:
                return
            labels = [keys[i] for i in fresh]
            needed = len(self._keys) + len(labels)
            capacity = self._index.get_max_elements()
            if needed > capacity:
                self._index.resize_index(max(needed, capacity * 2))
            reuse = min(self._free, len(labels))
            data = np.ascontiguousarray(vectors[fresh], dtype=np.float32)
            if reuse:
                self._index.add_items(data[:reuse], labels[:reuse], replace_deleted=True)
                self._free -= reuse
            if reuse < len(labels):
                self._index.add_items(data[reuse:], labels[reuse:])
            self._keys.update(labels)

    def remove(self, keys: Sequence[int]) -> None:
        with self._lock:
            for key in keys:
                if key in self._keys:
                    self._index.mark_deleted(key)
                    self._keys.discard(key)
                    self._free += 1

    def search(self, vector: Vectors, count: int) -> list[tuple[int, float]]:
        with self._lock:
            count = min(count, len(self._keys))
            if count == 0:
                return []
            self._index.set_ef(max(EF_SEARCH, count))
            labels, distances = self._index.knn_query(
                np.asarray(vector, dtype=np.float32).reshape(1, -1), k=count
            )
        # hnswlib's "ip" distance is 1 - inner product.
        return [
            (int(key), 1.0 - float(distance))
            for key, distance in zip(labels[0], distances[0], strict=True)
        ]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
