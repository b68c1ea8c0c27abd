"""The ``comirec`` source: ComiRec-SA and ComiRec-DR multi-interest retrieval (Cen et al. KDD'20).

Import-light: the hooks live in :mod:`recall_plugins.comirec.plugin` and load
torch and faiss only when they train, index or load.
"""
