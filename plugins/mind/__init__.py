"""The ``mind`` source: multi-interest retrieval with dynamic routing (Li et al. CIKM'19).

Import-light: the hooks live in :mod:`recall_plugins.mind.plugin` and load
torch and faiss only when they train, index or load.
"""
