"""Serving ``dnc_ebr``: one faiss index per cluster, searched in parallel, merged by quota.

For a query, cluster k's list comes from the user vector under task k searched
in cluster k's index (``cluster_XXX.faiss`` in the index directory; faiss and
torch release the GIL, so the K searches run in a thread pool). The merged list
takes M_k of each cluster's best items (:func:`~recall_plugins.dnc_ebr.quota.allocate_quota`:
``equal``, or ``intent`` with M_k ∝ p_uk^α, leftovers redistributed).

Scores are comparable across clusters: candidate i of cluster k scores
``log p_uk + s_ik/τ − logsumexp_{j ∈ C_k} s_jk/τ`` = log P(i | u) under the
model's factorisation P(cluster | u)·P(item | cluster, u) (the in-cluster
softmax is exactly what the in-cluster loss trains; the normaliser runs over
the whole cluster, exclusions included). The merged list is sorted by it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recall_core import native
from recall_core.contract import Candidates, QueryBatch
from recall_core.errors import ArtifactError
from recall_core.ranking import top_k_excluding
from recall_core.native import torch as load_torch
from recall_core.training.batching import known_histories, pad_histories
from recall_core.training.faiss_index import IndexSettings, ItemIndex
from recall_core.training.inference import SavedGraphs, example_histories, serving_forward
from recall_core.training.user_cache import UserVectorCache
from recall_plugins.dnc_ebr.config import DncEbrConfig
from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec
from recall_plugins.dnc_ebr.quota import allocate_quota

torch = load_torch()
ENCODE_BATCH = 512
PARALLEL_MIN_SCORES = 1 << 18
"""Below this many (query, item) scores a batch's K cluster searches run serially."""
TASK_ROWS = 512
"""Encoder rows per forward when a query's K task passes are stacked into one."""
EXACT_SCORES_PER_CALL = 1 << 22
"""Most (query, task, item) scores one all-clusters product may hold (16 MiB of float32)."""


def index_file(cluster: int) -> str:
    return f"cluster_{cluster:03d}.faiss"


def cluster_members(item_cluster: np.ndarray) -> list[np.ndarray]:
    """Dense item ids of each cluster, ascending (faiss id within cluster k = position here)."""
    return [np.flatnonzero(item_cluster == k) for k in range(int(item_cluster.max()) + 1)]


def build_indexes(net: DncEbrNet, item_cluster: np.ndarray, settings: IndexSettings
                  ) -> list[ItemIndex]:
    """One inner-product index per cluster over its items' current vectors."""
    vectors = net.item_vectors().detach().numpy()
    return [ItemIndex.build(vectors[members], settings) for members in cluster_members(item_cluster)]


def save_indexes(indexes: Sequence[ItemIndex], index_dir: Path) -> None:
    for k, index in enumerate(indexes):
        index.save(Path(index_dir) / index_file(k))


def load_indexes(index_dir: Path, num_clusters: int, settings: IndexSettings) -> list[ItemIndex]:
    return [ItemIndex.load(Path(index_dir) / index_file(k), settings) for k in range(num_clusters)]


@dataclass
class ClusterLists:
    """Per-cluster candidate lists of a batch, before the quota merge."""

    items: np.ndarray  # (Q, K, m) dense item ids, -1 = padding; sorted by score per cluster
    scores: np.ndarray  # (Q, K, m) float32 log P(i | u), -inf = padding
    probabilities: np.ndarray  # (Q, K) p_uk from the intent head (uniform without one)


class ExactClusters:
    """Every cluster searched at once when the per-cluster indexes are exact (flat).

    The items are kept sorted by cluster, so the logits of every cluster land in one
    ``(Q, N)`` matrix (one product per cluster with its own task vector, or a single
    product for a shared vector) and replace K searches plus K partition-function
    products; the per-cluster normalisers come from ``reduceat`` over the contiguous
    cluster segments and the per-cluster top lists from one sort keyed by (cluster,
    score). The numbers are those of
    :meth:`DncEbrHandle._search_cluster`: a single query's K lists cost a handful
    of numpy calls instead of K times a dozen.
    """

    def __init__(self, members: Sequence[np.ndarray], vectors: np.ndarray) -> None:
        self.order = np.concatenate(members).astype(np.int64)  # dense ids, cluster by cluster
        self.sizes = np.array([len(m) for m in members], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.segment = np.repeat(np.arange(len(members)), self.sizes)  # sorted position -> k
        self.table = np.ascontiguousarray(vectors[self.order], np.float32)  # (N, d)
        self.position = np.empty(len(self.order), np.int64)  # dense id -> sorted position
        self.position[self.order] = np.arange(len(self.order))

    def scored(self, users: np.ndarray, exclude: Sequence[np.ndarray],
               log_p: np.ndarray) -> np.ndarray:
        """``(Q, N)`` log P(i | u) of every item in cluster-sorted order, -inf where excluded
        (``users`` ``(Q, V, d)`` already divided by the temperature; V = K tasks or 1)."""
        queries, tasks, _ = users.shape
        n = len(self.order)
        if tasks == 1:
            logits = users[:, 0] @ self.table.T  # (Q, N)
        else:  # item i scored by the task of its own cluster: one product per cluster, so
            # each item meets one task vector, not all K (K times fewer multiply-adds)
            logits = np.empty((queries, n), np.float32)
            for cluster, (start, size) in enumerate(zip(self.starts.tolist(),
                                                        self.sizes.tolist())):
                segment = slice(start, start + size)
                logits[:, segment] = users[:, cluster] @ self.table[segment].T
        # (Q, K) -> (Q, N) per cluster segment: a repeat copies runs (a gather by
        # self.segment read one index per item: 0.13 against 0.02 ms for 64 x 3,000).
        top = np.maximum.reduceat(logits, self.starts, axis=1)  # (Q, K)
        log_norm = top + np.log(np.add.reduceat(
            np.exp(logits - np.repeat(top, self.sizes, axis=1)), self.starts, axis=1))
        scored = logits - np.repeat(log_norm - log_p, self.sizes, axis=1)  # (Q, N) log P(i | u)
        lengths = [len(e) for e in exclude]
        if sum(lengths):  # exclusions: the normaliser above still covers them, as per cluster
            rows = np.repeat(np.arange(queries), lengths)
            scored[rows, self.position[np.concatenate(exclude)]] = -np.inf
        return scored

    def search(self, users: np.ndarray, exclude: Sequence[np.ndarray], m: int,
               log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Q, K, m)`` items and log P(i | u) of every cluster's best ``m``."""
        scored = self.scored(users, exclude, log_p)
        queries = len(scored)
        ranked = np.lexsort((-scored, np.broadcast_to(self.segment, scored.shape)), axis=1)
        rank = np.arange(m)
        at = self.starts[:, None] + np.minimum(rank[None, :], self.sizes[:, None] - 1)  # (K, m)
        inside = rank[None, :] < self.sizes[:, None]
        picked = np.take_along_axis(ranked, at.reshape(1, -1).repeat(queries, 0), axis=1)
        scores = np.take_along_axis(scored, picked, axis=1).reshape(queries, len(self.sizes), m)
        items = self.order[picked].reshape(scores.shape)
        valid = inside[None] & np.isfinite(scores)
        return np.where(valid, items, -1), np.where(valid, scores, -np.inf).astype(np.float32)

    def top(self, users: np.ndarray, exclude: Sequence[np.ndarray], k: int,
            log_p: np.ndarray) -> Candidates:
        """The best ``k`` of all clusters by log P(i | u), groups = clusters: what the
        ``score`` merge makes of :meth:`search`'s lists (no cluster can hold more than
        ``k`` of the top ``k``), without building them."""
        scored = self.scored(users, exclude, log_p)
        found = top_k_excluding(scored, [np.empty(0, np.int64)] * len(scored), k)
        valid = found.items >= 0
        at = np.maximum(found.items, 0)
        return Candidates(np.where(valid, self.order[at], -1), found.scores,
                          np.where(valid, self.segment[at], -1))


class DncEbrHandle:
    """A loaded ``dnc_ebr`` servable: the network, the cluster map and K item indexes.

    ``graphs``: where a served handle's compiled encoder passes (:func:`serving_forwards`)
    keep their ONNX graphs, as ``build`` and ``load`` give; None (the validation handle of
    training) runs them eagerly.
    """

    def __init__(self, net: DncEbrNet, item_cluster: np.ndarray, indexes: Sequence[ItemIndex],
                 quota: str = "intent", alpha: float = 1.0, threads: int | None = None,
                 cache_size: int = 0, graphs: SavedGraphs | None = None,
                 precompute: int = 0) -> None:
        self.net, self.item_cluster, self.indexes = net, item_cluster, list(indexes)
        self.forwards = serving_forwards(net, graphs)
        self.quota, self.alpha = quota, alpha
        self.num_items = len(item_cluster)
        self.num_clusters = len(self.indexes)
        self.members = cluster_members(item_cluster)
        self.local = np.empty(self.num_items, np.int64)  # dense id -> position in its cluster
        for members in self.members:
            self.local[members] = np.arange(len(members))
        vectors = net.item_vectors().detach().numpy()
        self.cluster_vectors = [np.ascontiguousarray(vectors[m], np.float32) for m in self.members]
        # reduceat needs non-empty segments: a cluster without items keeps the per-cluster path.
        self.exact = (ExactClusters(self.members, vectors)
                      if all(index.exact_scores for index in self.indexes)
                      and all(len(m) for m in self.members) else None)
        self.threads = max(1, min(self.num_clusters, threads or native.thread_count()))
        self._pool: ThreadPoolExecutor | None = None  # created on first parallel call, then kept
        self.user_cache = UserVectorCache(cache_size, net.spec.encoder.max_len, precompute)

    def retrieve(self, queries: QueryBatch, k: int) -> Candidates:
        """The merged top ``k``: M_k items of each cluster, by log P(i | u), with groups."""
        if self.quota == "score" and self.exact is not None:
            return self._exact_top(queries, k)
        lists = self.cluster_lists(queries, k)
        return self.merge(lists, k)

    def _exact_top(self, queries: QueryBatch, k: int) -> Candidates:
        """The ``score`` merge straight from the all-cluster product (exact indexes)."""
        width = max(0, min(k, self.num_items))
        answers = []  # (rows, their candidates)
        for chunk, histories, exclude in self._chunks(queries) if width else ():
            _, users, log_p = self._encoded(histories)
            for part, scaled in self._exact_steps(users):
                answers.append((chunk[part],
                                self.exact.top(scaled, exclude[part], width, log_p[part])))
        if len(answers) == 1:  # the usual batch: answered as it is when it covers every row
            return Candidates.placed(answers[0][1], answers[0][0], len(queries), width, True)
        out = Candidates.padding(len(queries), width, grouped=True)
        for rows, found in answers:
            out.items[rows], out.scores[rows], out.groups[rows] = (
                found.items, found.scores, found.groups)
        return out

    def _chunks(self, queries: QueryBatch) -> Iterator[tuple[np.ndarray, list[np.ndarray],
                                                              list[np.ndarray]]]:
        """``(rows, histories, exclusions)`` of the queries with a known history, at most
        ``ENCODE_BATCH`` per encoder call."""
        known, rows = known_histories(queries.histories, self.num_items)
        for start in range(0, len(rows), ENCODE_BATCH):
            chunk = rows[start : start + ENCODE_BATCH]
            yield (chunk, [known[i] for i in chunk],
                   self._valid_exclusions([queries.exclude[i] for i in chunk]))

    def _exact_steps(self, users: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """Slices of ``users`` sized for one all-cluster product, divided by the temperature."""
        scaled = users / self.net.spec.temperature
        step = max(1, EXACT_SCORES_PER_CALL // (users.shape[1] * self.num_items))
        for start in range(0, len(users), step):
            part = slice(start, start + step)
            yield part, scaled[part]

    def _encoded(self, histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p, users, log p)``: intent ``(Q, K)``, user vectors ``(Q, V, d)``, log intent."""
        encoded = self.user_cache.encode(histories, self._encode)  # (Q, K + V·d)
        p = encoded[:, : self.num_clusters].astype(np.float64)
        users = encoded[:, self.num_clusters :].reshape(len(histories), -1,
                                                        self.net.spec.encoder.dim)
        return p, users, np.log(np.maximum(p, 1e-30))

    def _valid_exclusions(self, exclude: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.asarray(e, np.int64) for e in exclude]
        return [e[(e >= 0) & (e < self.num_items)] for e in arrays]

    def cluster_lists(self, queries: QueryBatch, m: int) -> ClusterLists:
        """Every cluster's best ``m`` items for every query (before the quota)."""
        width = max(0, min(m, self.num_items))
        shape = (len(queries), self.num_clusters, width)
        lists = ClusterLists(np.full(shape, -1, np.int64), np.full(shape, -np.inf, np.float32),
                             np.full(shape[:2], 1.0 / self.num_clusters))
        for chunk, histories, exclude in self._chunks(queries) if width else ():
            self._fill_chunk(lists, chunk, histories, exclude)
        return lists

    def _fill_chunk(self, lists: ClusterLists, rows: np.ndarray, histories: list[np.ndarray],
                    exclude: list[np.ndarray]) -> None:
        p, users, log_p = self._encoded(histories)
        m = lists.items.shape[2]
        lists.probabilities[rows] = p
        if self.exact is not None:
            for part, scaled in self._exact_steps(users):
                lists.items[rows[part]], lists.scores[rows[part]] = self.exact.search(
                    scaled, exclude[part], m, log_p[part])
            return
        found = self._per_cluster(
            lambda c: self._search_cluster(c, users[:, c if users.shape[1] > 1 else 0],
                                           exclude, m, log_p[:, c]), len(histories))
        for cluster, (items, scores) in enumerate(found):
            lists.items[rows, cluster, : items.shape[1]] = items
            lists.scores[rows, cluster, : items.shape[1]] = scores

    def _encode(self, histories: list[np.ndarray]) -> np.ndarray:
        """Rows ``[p_u1..p_uK, v_u(1), …, v_u(V)]``: intent, then V = K task vectors (1 without a prompt)."""
        inputs, lengths = (torch.from_numpy(a) for a in pad_histories(
            histories, self.net.spec.encoder.max_len, self.num_items))
        with torch.inference_mode():
            if not self.net.task_dependent:
                return self.forwards["shared_rows"](inputs, lengths).numpy()  # (Q, K + d)
            vectors = self._all_task_vectors(inputs, lengths)  # (Q, K·d)
            if self.net.intent_reads_task_state:  # the head reads those K vectors: no pass
                states = torch.from_numpy(vectors).reshape(len(inputs), self.num_clusters, -1)
                p = self.net.intent_from_task_states(states).numpy()
            else:
                p = self.forwards["intent_probabilities"](inputs, lengths).numpy()
        return np.concatenate([p, vectors], axis=1).astype(np.float32)  # (Q, K + K·d)

    def _all_task_vectors(self, inputs: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        # The K task passes of a query run as one forward of K rows (per few queries): one
        # large pass costs far less than K small ones, which are dominated by per-call overhead.
        k, queries = self.num_clusters, len(inputs)
        step = max(1, TASK_ROWS // k)
        parts = []
        for start in range(0, queries, step):
            chunk, chunk_lengths = inputs[start : start + step], lengths[start : start + step]
            n = len(chunk)
            tasks = torch.arange(k).repeat_interleave(n)  # (K·n,) task-major
            found = self.forwards["user_vectors"](chunk.repeat(k, 1), chunk_lengths.repeat(k),
                                                  tasks)
            parts.append(found.reshape(k, n, -1).transpose(0, 1).reshape(n, -1))  # (n, K·d)
        return torch.cat(parts).numpy()

    def _per_cluster(self, work: Callable[[int], Any], queries: int) -> list[Any]:
        """``work(c)`` for every cluster, in the handle's thread pool when the batch is big
        enough to repay the hand-offs (torch and faiss release the GIL), else in this thread."""
        if self.threads == 1 or queries * self.num_items < PARALLEL_MIN_SCORES:
            return [work(c) for c in range(self.num_clusters)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dnc-ebr")
        return list(self._pool.map(work, range(self.num_clusters)))

    def _search_cluster(self, cluster: int, users: np.ndarray, exclude: list[np.ndarray], m: int,
                        log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cluster ``cluster``'s best ``m`` items ``(Q, m)`` (dense ids, log P(i | u))."""
        users = np.ascontiguousarray(users, np.float32) / self.net.spec.temperature
        local_exclude = [self.local[e[self.item_cluster[e] == cluster]] for e in exclude]
        size = len(self.members[cluster])
        found = self.indexes[cluster].search(users, min(m, size), local_exclude)
        logits = users @ self.cluster_vectors[cluster].T  # (Q, n_k) the in-cluster partition
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        items = np.where(found.items >= 0, self.members[cluster][found.items.clip(min=0)], -1)
        scores = found.scores - log_norm[:, None] + log_p[:, None]
        return items, np.where(items >= 0, scores, -np.inf).astype(np.float32)

    def merge(self, lists: ClusterLists, m: int) -> Candidates:
        """The top ``m`` (``m`` <= the lists' width) under the quota, sorted by score
        (``score``: no quota, the top ``m`` of all clusters by log P(i | u))."""
        items, scores = lists.items[:, :, :m], lists.scores[:, :, :m]  # (Q, K, m)
        batch, clusters, width = items.shape
        if self.quota == "score":  # no quota: every cluster's items compete on log P(i | u)
            kept = np.ones(items.shape, bool)
        else:
            supply = (items >= 0).sum(axis=2)  # (Q, K)
            alpha = self.alpha if self.quota == "intent" else 0.0
            quota = allocate_quota(lists.probabilities, width, alpha, supply)  # (Q, K)
            kept = np.arange(width)[None, None, :] < quota[:, :, None]  # within the quota
        flat_scores = np.where(kept & (items >= 0), scores, -np.inf).reshape(batch, -1)
        order = np.argsort(-flat_scores, axis=1, kind="stable")[:, :width]
        top_scores = np.take_along_axis(flat_scores, order, axis=1)
        valid = np.isfinite(top_scores)
        top_items = np.where(valid, np.take_along_axis(items.reshape(batch, -1), order, axis=1), -1)
        groups = np.where(valid, order // max(width, 1), -1)  # flat index = cluster * width + rank
        return Candidates(top_items, top_scores.astype(np.float32), groups)


def serving_forwards(net: DncEbrNet, graphs: SavedGraphs | None) -> dict[str, Callable[..., Any]]:
    """The network's serving passes by method name, compiled when ``graphs`` says where
    (:mod:`recall_core.training.inference`): ``shared_rows`` for an unprompted model, else
    ``intent_probabilities`` and the task-conditioned ``user_vectors``."""
    names = (["shared_rows"] if not net.task_dependent
             else ["user_vectors"] if net.intent_reads_task_state
             else ["intent_probabilities", "user_vectors"])
    examples = example_histories(net.spec.encoder.num_items, net.spec.encoder.max_len)
    with_tasks = [(inputs, lengths, torch.arange(len(inputs)) % net.spec.num_clusters)
                  for inputs, lengths in examples]
    return {name: serving_forward(net, name, with_tasks if name == "user_vectors" else examples,
                                  trace=graphs is not None, graphs=graphs) for name in names}


def index_settings(config: DncEbrConfig) -> IndexSettings:
    return IndexSettings(config.index, config.ivf_lists, config.ivf_probe, config.hnsw_m,
                         config.hnsw_ef_search, config.seed)


def load_artifacts(artifact_dir: Path) -> tuple[DncEbrNet, np.ndarray]:
    """The trained network (eval mode) and the item -> cluster map of ``artifact_dir``."""
    from recall_plugins.dnc_ebr.train import CLUSTER_FILE, MODEL_FILE, SPEC_FILE

    artifact_dir = Path(artifact_dir)
    try:
        spec = DncEbrSpec.from_dict(json.loads((artifact_dir / SPEC_FILE).read_text()))
        state = torch.load(artifact_dir / MODEL_FILE, map_location="cpu", weights_only=True)
        item_cluster = np.load(artifact_dir / CLUSTER_FILE)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ArtifactError(f"dnc_ebr artifacts in {artifact_dir} are unreadable: {error}") from None
    if len(item_cluster) != spec.encoder.num_items or int(item_cluster.max()) + 1 != spec.num_clusters:
        raise ArtifactError(f"dnc_ebr artifacts in {artifact_dir}: cluster map does not match the model")
    net = DncEbrNet(spec)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False), item_cluster


def build(config: DncEbrConfig, artifact_dir: Path, index_dir: Path) -> DncEbrHandle:
    """Index every cluster's trained item vectors, persist the indexes, return the handle."""
    net, item_cluster = load_artifacts(artifact_dir)
    indexes = build_indexes(net, item_cluster, index_settings(config))
    save_indexes(indexes, index_dir)
    return DncEbrHandle(net, item_cluster, indexes, config.quota, config.alpha, config.threads,
                        config.user_cache, SavedGraphs(Path(index_dir), write=True),
                        config.precomputed_users)


def load(config: DncEbrConfig, artifact_dir: Path, index_dir: Path) -> DncEbrHandle:
    """Load the network and the persisted per-cluster indexes without rebuilding anything."""
    net, item_cluster = load_artifacts(artifact_dir)
    indexes = load_indexes(index_dir, int(item_cluster.max()) + 1, index_settings(config))
    return DncEbrHandle(net, item_cluster, indexes, config.quota, config.alpha, config.threads,
                        config.user_cache, SavedGraphs(Path(index_dir)),
                        config.precomputed_users)
