"""``recall serve`` and ``recall reload``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from recall_cli import common

if TYPE_CHECKING:
    from recall_core.server.app import ServerConfig

DEFAULT_SERVER = "localhost:50051"
SERVER_ENV = "RECALL_SERVER"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("reload")(reload)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 or [::] for all).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="gRPC port (0 = any free port).")
                    ] = 50051,
    metrics_port: Annotated[int, typer.Option(
        min=-1, max=65535, help="Prometheus /metrics port (0 = any free port, -1 = off).")] = 9464,
    workers: Annotated[int, typer.Option(min=1, help="Request handler threads.")] = 8,
    max_queue: Annotated[int, typer.Option(
        min=0, help="RPCs admitted beyond the busy workers; more get RESOURCE_EXHAUSTED.")] = 32,
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = 10_000,
    max_batch: Annotated[int, typer.Option(min=1, help="Most users in one BatchRetrieve.")
                         ] = 1_024,
    source_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds a source gets at most (the client's deadline may cut it).")
    ] = 1.0,
    admin_token_file: Annotated[Optional[Path], typer.Option(
        help="File holding the admin bearer token for Reload (else $RECALL_ADMIN_TOKEN).")
    ] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="PEM certificate: serve over TLS.")
                        ] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="PEM private key of --tls-cert.")
                       ] = None,
    tls_client_ca: Annotated[Optional[Path], typer.Option(
        help="PEM CA: require client certificates it signed (mutual TLS).")] = None,
    grace: Annotated[float, typer.Option(min=0, help="Seconds in-flight RPCs get on shutdown.")
                     ] = 5.0,
    drain: Annotated[float, typer.Option(
        min=0, help="Seconds NOT_SERVING is announced before new RPCs are refused.")] = 0.0,
    access_log: Annotated[bool, typer.Option(
        "--access-log/--no-access-log", help="One JSON line per RPC on stderr.")] = True,
    warm_users: Annotated[int, typer.Option(
        min=0, help="After each load/reload, encode up to this many stored users (latest "
                    "active first) in the background, so they are served from the "
                    "user-vector caches (0 = off).")] = 0,
    torch_threads: Annotated[int, typer.Option(
        min=1, help="Intra-op threads per torch call (the sources already run "
                    "concurrently; more rarely pays on small encoder passes).")] = 1,
    processes: Annotated[int, typer.Option(
        min=0, help="Worker processes sharing the port (SO_REUSEPORT), each with every "
                    "source loaded (0 = one per usable core; 1 on a memory-tight host). A "
                    "Reload reaching one reloads all; worker i serves metrics on "
                    "--metrics-port + i.")] = 0,
    share_batches_from: Annotated[int, typer.Option(
        min=0, help="With --processes: a BatchRetrieve of at least this many users is split "
                    "over every worker, computed at once (0 = never).")] = 16,
) -> None:
    """Serve the project's sources over gRPC (recall.v1.RecallService) until SIGTERM/Ctrl-C."""
    from recall_core.native import usable_cpus
    from recall_core.server.app import RecallServer, ServerConfig, TlsConfig, configure_logging
    from recall_core.server.convert import Limits

    configure_logging(access_log)
    if (tls_cert is None) != (tls_key is None):
        common.fail("--tls-cert and --tls-key go together")
    config = ServerConfig(
        host=host, port=port, metrics_port=None if metrics_port < 0 else metrics_port,
        workers=workers, max_queue=max_queue,
        limits=Limits(max_k=max_k, max_batch=max_batch), source_timeout=source_timeout,
        admin_token=_read_token(admin_token_file),
        tls=TlsConfig(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None,
        grace=grace, drain=drain, access_log=access_log, warm_users=warm_users,
        torch_threads=torch_threads, share_batches_from=share_batches_from)
    # One process per core by default: a process's Python holds one GIL, so one process
    # used about 1.1 of 2 cores under 8 clients on ml-1m-3k (see the README's figures).
    processes = processes or usable_cpus()
    if processes > 1:
        _serve_processes(config, processes)
        return
    server = RecallServer(common.STATE.project_dir, config, host=common.host()).start()
    metrics = f", metrics on :{server.metrics_port}/metrics" if server.metrics_port else ""
    typer.echo(f"recall: serving {common.STATE.project_dir.resolve()} on {host}:{server.port}"
               f"{metrics} (loading sources; Ctrl-C stops)", err=True)
    server.serve_forever()


def _serve_processes(config: ServerConfig, processes: int) -> None:
    from recall_core.server.workers import WorkerPool

    common.host()  # one warning line per broken plugin here, not one per worker
    pool = WorkerPool(common.STATE.project_dir, config, processes).start()
    ports = [w.metrics_port for _, w in sorted(pool.workers.items()) if w.metrics_port]
    metrics = f", metrics on :{','.join(map(str, ports))}/metrics" if ports else ""
    pids = ", ".join(str(w.pid) for _, w in sorted(pool.workers.items()))
    typer.echo(f"recall: serving {common.STATE.project_dir.resolve()} on {config.host}:"
               f"{pool.port} with {processes} worker processes (pids {pids}; peer sockets in "
               f"{pool.peers_dir}){metrics} (loading sources; Ctrl-C stops)", err=True)
    pool.serve_forever()


def reload(
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="[NAME]...", help="Sources to reload even if unchanged (default: every source "
                                  "whose published version changed).")] = None,
    server: Annotated[str, typer.Option(help="The server, HOST:PORT.", envvar=SERVER_ENV)
                      ] = DEFAULT_SERVER,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the reload.")
                       ] = 120.0,
    admin_token_file: Annotated[Optional[Path], typer.Option(
        help="File holding the admin bearer token (else $RECALL_ADMIN_TOKEN).")] = None,
    tls_ca: Annotated[Optional[Path], typer.Option(
        help="PEM CA to verify a TLS server with.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a running server load newly published artifacts and swap them in."""
    from recall_core.server.client import RecallClient

    token = _read_token(admin_token_file) or os.environ.get("RECALL_ADMIN_TOKEN")
    roots = tls_ca.read_bytes() if tls_ca else None
    with RecallClient(server, admin_token=token, root_certificates=roots) as client:
        response = client.reload(names or [], timeout=timeout)
    rows = [{"name": s.name, "kind": s.kind, "status": s.status, "version": s.artifact_version,
             "reloaded": s.name in response.reloaded, "detail": s.detail}
            for s in response.sources]
    if as_json:
        common.print_json({"server": server, "sources": rows})
        return
    for row in rows:
        mark = "reloaded" if row["reloaded"] else "unchanged"
        typer.echo(f"{row['name']:<20} {row['status']:<10} {row['version'] or '-':<8} {mark}"
                   + (f"  ({row['detail']})" if row["detail"] else ""))


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as error:
        common.fail(f"cannot read {path}: {error.strerror}")
        return None
