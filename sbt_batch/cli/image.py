"""CLI commands: ``image pull|build|list|check`` and ``selfcheck``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sbt_batch.cli.app import app
from sbt_batch.common.errors import UserError

image_app = typer.Typer(
    help="Container images: pull (SIF with apptainer, else podman/docker), build, list, check.",
    no_args_is_help=True,
)
app.add_typer(image_app, name="image", rich_help_panel="Containers")

RUNTIME_HELP = "apptainer, singularity, podman or docker (default: the first on PATH that suits the image)."


@image_app.command("pull")
def image_pull(
    ref: str | None = typer.Argument(None, help="Image reference (default: the published CPU image of this version)."),
    gpu: bool = typer.Option(False, "--gpu", help="Default to the GPU image instead of the CPU one."),
    runtime: str | None = typer.Option(None, "--runtime", help=RUNTIME_HELP),
    dest: Path | None = typer.Option(None, "--dest", help="Folder for SIF files (default $SBT_BATCH_CACHE/images)."),
) -> None:
    """Pull an image: a SIF file in the cache with apptainer, otherwise into podman or docker."""
    from sbt_batch.common.console import console
    from sbt_batch.container import images

    ref = ref or images.default_ref(gpu)
    local = images.pull(ref, runtime=runtime, dest_dir=dest)
    console.print(f"pulled {ref} -> {local}")


@image_app.command("build")
def image_build(
    gpu: bool = typer.Option(False, "--gpu", help="Build the CUDA variant (nvidia/cuda runtime base, tensorflow[and-cuda])."),
    tag: str | None = typer.Option(None, "--tag", "-t", help="Image tag (default sbt-batch:VERSION-cpu or -gpu)."),
    base: str | None = typer.Option(None, "--base", help="Base image (build arg BASE_IMAGE)."),
    build_arg: list[str] = typer.Option([], "--build-arg", help="Extra KEY=VALUE build argument (repeatable)."),
    context: Path | None = typer.Option(None, "--context", help="sbt-batch source checkout (default: found from here)."),
    builder: str | None = typer.Option(None, "--builder", help="docker, podman or buildah (default: the first on PATH)."),
) -> None:
    """Build the image from containers/Dockerfile (a source checkout is needed)."""
    from sbt_batch.common.console import console
    from sbt_batch.container import images

    args = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--build-arg: expected KEY=VALUE, got {item!r}")
        args[key] = value
    built = images.build(gpu=gpu, tag=tag, context=context, builder=builder, base=base, build_args=args)
    console.print(f"built {built}")


@image_app.command("list")
def image_list(
    runtime: str | None = typer.Option(None, "--runtime", help="Only this runtime's images."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List cached SIF files and sbt-batch images in podman/docker."""
    from rich.table import Table

    from sbt_batch.common.console import console
    from sbt_batch.container import images

    if runtime is not None and runtime not in images.RUNTIMES:
        raise UserError(f"--runtime: unknown container runtime {runtime!r} (use {', '.join(images.RUNTIMES)})")
    rows = images.list_images(runtime)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"no sbt-batch images (SIF cache: {images.cache_dir()}); try: sbt-batch image pull")
        return
    table = Table("runtime", "image", "size")
    for row in rows:
        table.add_row(row["runtime"], row["image"], row["size"])
    console.print(table)


@image_app.command("check")
def image_check(
    image: str = typer.Argument(..., help="SIF file, docker://REF, or a podman/docker image."),
    runtime: str | None = typer.Option(None, "--runtime", help=RUNTIME_HELP),
    gpus: int = typer.Option(0, "--gpus", min=0, help="Give the container GPUs (apptainer --nv, podman CDI, docker --gpus)."),
    quick: bool = typer.Option(False, "--quick", help="Skip importing TensorFlow/Horovod inside."),
) -> None:
    """Run "sbt-batch selfcheck" inside an image."""
    from sbt_batch.container import images

    code = images.check(image, runtime=runtime, gpus=gpus, quick=quick)
    if code != 0:
        raise UserError(f"{image}: selfcheck inside the image failed with exit code {code}")


@app.command("selfcheck", rich_help_panel="Containers")
def selfcheck(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quick: bool = typer.Option(False, "--quick", help="Do not import TensorFlow/Horovod (versions from metadata only)."),
    require: list[str] = typer.Option([], "--require", help="Fail unless this package or tool is present and working (repeatable)."),
) -> None:
    """Show the stack versions, the Horovod build, visible GPUs and the batch/container tools."""
    from sbt_batch.container import selfcheck as check

    report = check.collect(quick=quick)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        from sbt_batch.common.console import console

        for item in check.render(report):
            console.print(item)
    problems = check.missing(report, require)
    if problems:
        raise UserError("selfcheck: " + "; ".join(problems))
