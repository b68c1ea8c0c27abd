"""The ``sasrec`` source: single-vector sequential EBR with a causal Transformer user encoder.

Import-light: the hooks live in :mod:`recall_plugins.sasrec.plugin` and load
torch and faiss only when they train, index or load.
"""
