"""The ``dnc_ebr`` source: divide-and-conquer embedding-based retrieval (arXiv 2302.02657).

Items are split into K clusters (K-means over item2vec embeddings, or the item
category); one sequence encoder is adapted to each cluster by a learnable task
prompt, trained with negatives from the positive's cluster; retrieval searches
one faiss index per cluster and merges the lists under a per-user intent quota.

Import-light: the hooks live in :mod:`recall_plugins.dnc_ebr.plugin` and load
torch and faiss only when they train, index or load.
"""
