"""`superscale pull [v1 v2] [--model-dir DIR]`: fetch checkpoints ahead of time and check them
(`superscale.model.pull`), so that a server, an image or a volume needs no network later."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from superscale.cli.options import model_dir_option
from superscale.registry import CHECKPOINT_NAMES
from superscale.settings import Settings


@click.command()
@click.argument("names", nargs=-1, type=click.Choice(CHECKPOINT_NAMES))
@model_dir_option
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar per file (default: when stderr is a terminal).",
)
def pull(names: tuple[str, ...], model_dir: Path | None, progress: bool | None) -> None:
    """Download checkpoints (default: all) and check them against what the hub publishes."""
    from superscale.model.checkpoints import CheckpointError
    from superscale.model.pull import pull as pull_one

    model_dir = model_dir or Settings().model_dir
    failed = 0
    for name in names or CHECKPOINT_NAMES:
        try:
            pull_one(name, model_dir, progress=lambda line: click.echo(line), bar=progress)
        except CheckpointError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
    if failed:
        sys.exit(1)
