"""``thinkbox image build [--runtime-check] [--force]``: the docker backend's sandbox image, no registry."""

from __future__ import annotations

import sys

import typer

image_app = typer.Typer(help="The docker backend's sandbox image.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


@image_app.command("build")
def build(
    runtime_check: bool = typer.Option(
        False, "--runtime-check", help="Then start one session in it (and one under runsc where configured)."
    ),
    force: bool = typer.Option(False, "--force", help="Build again even when the content tag exists."),
) -> None:
    """Build thinkbox-sandbox:<content hash> (debootstrap + docker import; skipped when nothing changed)."""
    from rich.console import Console

    from thinkbox.errors import ThinkboxError

    err = Console(stderr=True)
    try:
        import docker

        from thinkbox.sandbox.docker import image as docker_image
        from thinkbox.sandbox.docker.backend import ENGINE_HINT

        try:
            client = docker.from_env()
            client.ping()
        except docker.errors.DockerException as exc:
            print(f"thinkbox image build: no Docker engine answers ({exc}); {ENGINE_HINT}", file=sys.stderr)
            raise typer.Exit(2) from None
        result = docker_image.build_image(
            client, progress=lambda m: err.print(f"[dim]{m}[/dim]"), force=force
        )
        state = "built" if result.built else "up to date"
        print(f"{result.image} ({state}, {result.seconds:.1f} s); also tagged {docker_image.DEFAULT_IMAGE}")
        if runtime_check:
            import asyncio

            runtimes = ["runc", *(["runsc"] if "runsc" in (client.info().get("Runtimes") or {}) else [])]
            for runtime in runtimes:
                print(f"{runtime}: {asyncio.run(_check(result.image, runtime))}")
    except ImportError:
        print("thinkbox image build: needs the Docker SDK: pip install 'thinkbox[docker]'", file=sys.stderr)
        raise typer.Exit(2) from None
    except ThinkboxError as exc:
        print(f"thinkbox image build: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


async def _check(image: str, runtime: str) -> str:
    import time

    from thinkbox.sandbox.docker.backend import DockerBackend

    backend = DockerBackend(image=image, runtime=None if runtime == "runc" else runtime)
    try:
        started = time.perf_counter()
        session = await backend.create_session()
        ready = time.perf_counter() - started
        result = await session.execute("import sys, numpy, pandas, matplotlib\nsys.version.split()[0]")
        await session.close()
        return f"session ready in {ready:.2f} s, Python {result.result}" if result.ok else f"failed: {result}"
    finally:
        await backend.aclose()
