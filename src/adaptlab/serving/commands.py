"""``adaptlab serve``: one base model, many adapters, OpenAI-shaped HTTP on uvicorn.

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
) -> None:
    """Serve a base model and adapters over HTTP (classify, completions, chat, models, metrics, playground)."""
    import uvicorn

    from adaptlab.errors import UserError
    from adaptlab.serving.adapters import parse_adapter_option, resolve_adapter
    from adaptlab.serving.app import create_app
    from adaptlab.serving.engine import EngineError
    from adaptlab.serving.transformers_engine import TransformersEngine, default_threads

    specs = [resolve_adapter(*parse_adapter_option(value)) for value in adapter]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"--adapter: name(s) {duplicates} given more than once.")
    base = base or next((s.base_spec for s in specs if s.base_spec), None)
    if not base:
        raise UserError("--base: give the base model (e.g. --base minilm), or an adapter that names its base.")
    sock = listen_socket(host, port)  # before loading anything: a taken port is a user error, said at once
    with console.status(f"loading {base}"):
        engine = TransformersEngine(base, device=device, threads=threads or default_threads())
        for spec in specs:
            try:
                engine.load_adapter(spec)
            except EngineError as e:
                raise UserError(f"--adapter {spec.name}={spec.path}: {e}") from None
    settings = ServerSettings(
        api_key=api_key, max_batch_size=max_batch_size, max_queue=max_queue, timeout_s=timeout,
        max_tokens=max_tokens, max_body_bytes=max_body_bytes, adapter_roots=adapter_root or [Path.cwd()],
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err_console.print(f"[yellow]warning:[/yellow] listening on {host} without --api-key; admin endpoints are off.")
    models = ", ".join(a.name for a in engine.adapters())
    console.print(f"serving {models} on http://{host}:{port} (playground at /, metrics at /metrics)")
    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings), host=host, port=port, log_level="warning",
                                           access_log=False))
    try:
        server.run(sockets=[sock])  # the socket bound above, so what was checked is what is served
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
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
