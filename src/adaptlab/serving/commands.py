"""``adaptlab serve``: one base model, many adapters, OpenAI-shaped HTTP on uvicorn (``--replicas N``: N copies on
Ray Serve behind one front, :mod:`adaptlab.serving.replicas`).

    adaptlab serve --base minilm --adapter rt=runs/rotten_tomatoes/lora \\
        --adapter probe=runs/rotten_tomatoes/linear_probe --port 8000 --api-key "$KEY"
    curl -s localhost:8000/v1/classify -H 'Content-Type: application/json' -d '{"model": "rt", "input": "a gem"}'

Adapters are run folders, bundles (``adaptlab export``) or peft adapter folders; ``base`` is the bare base model.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import typer

from adaptlab.cli import app, console, err_console
from adaptlab.serving.settings import ServerSettings

_DEFAULTS = ServerSettings()


@app.command()
def serve(
    base: str | None = typer.Option(None, "--base", help="Base model (folder, minilm, smollm2, tiny-random-*); "
                                                         "default: the first adapter's base."),
    adapter: list[str] = typer.Option([], "--adapter", "-a", help="NAME=PATH of a run, bundle or peft adapter "
                                                                  "(repeatable)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=1, max=65535),
    api_key: str | None = typer.Option(None, "--api-key", envvar="ADAPTLAB_API_KEY",
                                       help="Key for the admin endpoints (none: admin disabled)."),
    adapter_root: list[Path] = typer.Option([], "--adapter-root", help="Folders admin calls may load adapters from "
                                                                       "(default: the current folder)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    threads: int | None = typer.Option(None, min=1, help="Torch CPU threads (default: CPU cores - 1)."),
    max_batch_size: int = typer.Option(_DEFAULTS.max_batch_size, min=1),
    max_queue: int = typer.Option(_DEFAULTS.max_queue, min=1, help="Waiting requests before 429."),
    timeout: float = typer.Option(_DEFAULTS.timeout_s, min=0.1, help="Per-request timeout in seconds (504)."),
    max_tokens: int = typer.Option(_DEFAULTS.max_tokens, min=1, help="Largest max_tokens a request may ask for."),
    max_body_bytes: int = typer.Option(_DEFAULTS.max_body_bytes, min=1),
    replicas: int = typer.Option(1, "--replicas", help="Copies of the base and its adapters, each in its own "
                                                       "process; above 1, on Ray Serve (RAY_ADDRESS: a cluster "
                                                       "to join; default: a local one)."),
    replica_cpus: float = typer.Option(1.0, "--replica-cpus", min=0.01, help="Ray CPUs each replica reserves "
                                                                              "(--replicas above 1)."),
    replica_gpus: float = typer.Option(0.0, "--replica-gpus", min=0.0, help="GPUs each replica reserves "
                                                                            "(--replicas above 1; 0.5: two a GPU)."),
) -> None:
    """Serve a base model and adapters over HTTP (classify, completions, chat, models, metrics, playground)."""
    from adaptlab.errors import UserError
    from adaptlab.serving.adapters import parse_adapter_option, resolve_adapter

    if replicas < 1:
        raise UserError(f"--replicas {replicas}: give 1 (one process) or more (replicas on Ray Serve).")
    specs = [resolve_adapter(*parse_adapter_option(value)) for value in adapter]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"--adapter: name(s) {duplicates} given more than once.")
    base = base or next((s.base_spec for s in specs if s.base_spec), None)
    if not base:
        raise UserError("--base: give the base model (e.g. --base minilm), or an adapter that names its base.")
    sock = listen_socket(host, port)  # before loading anything: a taken port is a user error, said at once
    settings = ServerSettings(
        api_key=api_key, max_batch_size=max_batch_size, max_queue=max_queue, timeout_s=timeout,
        max_tokens=max_tokens, max_body_bytes=max_body_bytes, adapter_roots=adapter_root or [Path.cwd()],
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err_console.print(f"[yellow]warning:[/yellow] listening on {host} without --api-key; admin endpoints are off.")
    try:
        if replicas == 1:
            app_ = _single_app(base, specs, settings, device, threads)
            console.print(f"serving {_models(app_)} on http://{host}:{port} (playground at /, metrics at /metrics)")
            _run_uvicorn(app_, sock, host, port)
        else:
            resources = {"num_cpus": replica_cpus, "num_gpus": replica_gpus}
            _serve_replicated(base, specs, settings, device, threads, replicas, resources, sock, host, port)
    finally:
        sock.close()


def _single_app(base: str, specs: list, settings: ServerSettings, device: str, threads: int | None):
    """Today's server: one process, one engine."""
    from adaptlab.serving.app import create_app
    from adaptlab.serving.transformers_engine import load_engine

    with console.status(f"loading {base}"):
        engine = load_engine(base, specs, device=device, threads=threads)
    return create_app(engine, settings)


def _models(app_) -> str:
    return ", ".join(app_.state.models)


def _serve_replicated(base: str, specs: list, settings: ServerSettings, device: str, threads: int | None,
                      replicas: int, resources: dict[str, float], sock: socket.socket, host: str, port: int) -> None:
    """``replicas`` copies on Ray Serve behind the retrying front (:mod:`adaptlab.serving.replicas`)."""
    from adaptlab.serving import replicas as rs

    device = rs.replica_device(device, resources["num_gpus"])
    config = rs.replica_config(base, [(s.name, s.path) for s in specs], settings, device,
                               threads or max(1, int(resources["num_cpus"])))
    started = rs.start_ray(replicas * resources["num_cpus"])
    try:
        rs.check_resources(replicas, resources, strict=started)
        with console.status(f"starting {replicas} replicas of {base} on Ray Serve"):
            handle = rs.deploy(config, replicas, resources)
        models = ", ".join(["base", *(s.name for s in specs)])
        console.print(f"serving {models} on http://{host}:{port} with {replicas} replicas on Ray Serve "
                      "(playground at /, metrics per replica at /metrics)")
        _run_uvicorn(rs.ReplicaFront(handle, settings), sock, host, port)
    finally:
        rs.stop(shutdown_ray=started)


def _run_uvicorn(asgi_app, sock: socket.socket, host: str, port: int) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(asgi_app, host=host, port=port, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])  # the socket bound before loading, so what was checked is what is served
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise typer.Exit(3)


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds one); UserError if the port is taken or the host unusable."""
    from adaptlab.errors import UserError

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use; pick another with --port.") from None
        if e.errno == errno.EACCES:
            raise UserError(f"no permission to listen on port {port} on {host}; pick a port above 1023 with --port."
                            ) from None
        raise UserError(f"can't listen on {host}:{port} ({e.strerror or e}); check --host and --port.") from None
    return sock
