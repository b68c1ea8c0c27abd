"""Serving over gRPC: ``recall.v1.RecallService`` (see DESIGN.md section 6).

- :mod:`~recall_core.server.app`: :class:`RecallServer` and :class:`ServerConfig`
  (health, reflection, TLS, metrics port, graceful shutdown);
- :mod:`~recall_core.server.state`: snapshots swapped atomically on reload;
- :mod:`~recall_core.server.service`: the thin servicer;
- :mod:`~recall_core.server.convert`: request validation and response building;
- :mod:`~recall_core.server.errors`: the one error → status code mapping;
- :mod:`~recall_core.server.interceptors`, :mod:`~recall_core.server.metrics`:
  request ids, access logs, Prometheus metrics;
- :mod:`~recall_core.server.client`: :class:`RecallClient`.

Nothing is imported here, so ``import recall_core.server.client`` stays light.
"""
