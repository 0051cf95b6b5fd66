"""`superscale` command line. Subcommands live in their own modules and load on use, so that
`superscale keys …` does not import torch."""

from __future__ import annotations

import importlib

import click

# name → "module:attribute" of a click command.
COMMANDS = {
    "serve": "superscale.cli.serve:serve",
    "worker": "superscale.cli.worker:worker",
    "keys": "superscale.cli.keys:keys",
    "login-link": "superscale.cli.login_link:login_link",
    "upscale": "superscale.cli.upscale:upscale",
    "run": "superscale.cli.run:run",
    "pull": "superscale.cli.pull:pull",
    "train": "superscale.cli.train:train",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="superscale")
def main() -> None:
    """superscale: self-hosted AuraSR 4x upscaling with fal's API."""
