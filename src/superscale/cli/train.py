"""`superscale train DATA… --from v2 --out DIR`: fine-tune AuraSR on your own images (or train
a config from scratch) and get a checkpoint `serve` can serve. docs/training.md walks through
it; `superscale.train` does the work."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from superscale.cli import options


def _range(text: str, kind: type = float) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        return kind(low), kind(high or low)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not LOW,HIGH") from None


@click.command(context_settings={"show_default": True, "max_content_width": 100})
@click.argument("data", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the result (model.safetensors + config.json), the log, samples and the "
    "training state.",
)
@click.option(
    "--from",
    "init",
    default="v2",
    help="Start from v1, v2 or a checkpoint folder; 'scratch' trains --config from random weights.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A config.json: the network to train from scratch, or checked against --from.",
)
@options.model_dir_option
@click.option("--steps", type=click.IntRange(min=1), default=10_000, help="Optimiser steps.")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=4,
    help="Crops per step, over all processes and accumulation steps.",
)
@click.option(
    "--accumulate",
    type=click.IntRange(min=1),
    default=1,
    help="Split each step's batch into this many passes (less memory).",
)
@click.option("--lr", type=float, default=1e-4, help="Generator learning rate (Adam).")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=0, help="Steps of linear learning-rate warm-up."
)
@click.option(
    "--perceptual",
    type=click.FloatRange(min=0),
    default=None,
    help="VGG19 perceptual loss weight [default: 1 where the weights are found, else 0].",
)
@click.option(
    "--perceptual-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="torchvision's vgg19-dcbb9e9d.pth [default: torch hub's cache].",
)
@click.option(
    "--gan",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Adversarial loss weight (0: no discriminator; try 0.1 after an L1 run).",
)
@click.option("--d-lr", type=float, default=1e-4, help="Discriminator learning rate.")
@click.option("--d-channels", type=click.IntRange(min=1), default=64, help="Discriminator width.")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999)
@click.option("--publish-raw", is_flag=True, help="Write the raw weights, not their EMA.")
@click.option(
    "--degrade",
    type=click.Choice(["bicubic", "real-world"]),
    default="bicubic",
    help="How inputs are made: bicubic 4x down, or blur/resize/noise/JPEG chains.",
)
@click.option("--blur", type=float, default=None, help="Blur probability (overrides --degrade).")
@click.option("--blur-sigma", default=None, help="Blur sigma range LOW,HIGH in pixels.")
@click.option("--noise", type=float, default=None, help="Noise probability.")
@click.option("--noise-sigma", default=None, help="Noise sigma range LOW,HIGH in 8-bit levels.")
@click.option("--jpeg", type=float, default=None, help="JPEG re-compression probability.")
@click.option("--jpeg-quality", default=None, help="JPEG quality range LOW,HIGH.")
@click.option("--resize", type=float, default=None, help="Intermediate resize probability.")
@click.option(
    "--second-order", type=float, default=None, help="Probability of applying the chain twice."
)
@click.option("--no-flips", is_flag=True, help="No random flips and transpositions.")
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1),
    default=0.1,
    help="Share of the images held out for validation.",
)
@click.option(
    "--val-images",
    type=click.IntRange(min=1),
    default=8,
    help="At most this many validation images.",
)
@click.option("--val-every", type=click.IntRange(min=1), default=500)
@click.option("--save-every", type=click.IntRange(min=1), default=1000)
@click.option("--log-every", type=click.IntRange(min=1), default=10)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    help="Data-loading processes (0: load in this process).",
)
@click.option("--seed", type=int, default=0)
@click.option("--device", default="auto", help="cpu, cuda, cuda:N (auto: cuda if present).")
@click.option(
    "--bf16/--no-bf16", default=None, help="bf16 autocast [default: on GPUs that support it]."
)
@click.option(
    "--checkpointing", is_flag=True, help="Gradient checkpointing: less memory, ~30%% more compute."
)
@click.option(
    "--resume", is_flag=True, help="Go on from --out's saved state (--steps may be raised)."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar [default: when stderr is a terminal].",
)
@options.log_level_option
def train(
    data: tuple[Path, ...],
    out: Path,
    init: str,
    config: Path | None,
    model_dir: Path | None,
    **flags: object,
) -> None:
    """Fine-tune AuraSR on DATA (image files or folders, searched recursively).

    \b
    Example:
      superscale train ~/photos --from v2 --out runs/photos --steps 5000 --batch 8
      superscale serve --checkpoint v2 --checkpoint photos=runs/photos

    Every image needs 256x256 pixels or more; smaller ones are skipped and counted. Stop with
    Ctrl-C at any time: the state is saved, and --resume goes on from it. Several GPUs:
    torchrun --nproc-per-node N -m superscale train ... (the same arguments)."""
    from superscale.model import CheckpointError
    from superscale.train import Degradation, TrainingError, TrainOptions
    from superscale.train import train as run
    from superscale.train.loop import Stop

    log_level = str(flags.pop("log_level"))
    options.setup_logging(log_level)
    if not data and not flags["resume"]:
        raise click.UsageError("give the images to train on (files or folders)")
    base = Degradation.real_world() if flags.pop("degrade") == "real-world" else Degradation()
    chosen: dict[str, Any] = {
        "blur_prob": flags.pop("blur"),
        "blur_sigma": _range(str(s)) if (s := flags.pop("blur_sigma")) else None,
        "noise_prob": flags.pop("noise"),
        "noise_sigma": _range(str(s)) if (s := flags.pop("noise_sigma")) else None,
        "jpeg_prob": flags.pop("jpeg"),
        "jpeg_quality": _range(str(s), int) if (s := flags.pop("jpeg_quality")) else None,
        "resize_prob": flags.pop("resize"),
        "second_order_prob": flags.pop("second_order"),
    }
    try:
        degradation = dataclasses.replace(
            base, **{k: v for k, v in chosen.items() if v is not None}
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    progress = flags.pop("progress")
    resume = bool(flags.pop("resume"))
    weights_file = flags.pop("perceptual_weights")
    opts = TrainOptions(
        data=[str(p) for p in data],
        perceptual_weights=str(weights_file) if weights_file else None,
        out=str(out),
        init=None if init == "scratch" else init,
        config=str(config) if config else None,
        model_dir=str(model_dir) if model_dir else None,
        degradation=degradation,
        flips=not flags.pop("no_flips"),
        publish_ema=not flags.pop("publish_raw"),
        progress=sys.stderr.isatty() if progress is None else bool(progress),
        **flags,  # type: ignore[arg-type]
    )
    try:
        result = run(opts, resume=resume)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Stop as stop:
        raise SystemExit(128 + stop.signum) from None
    except (TrainingError, CheckpointError) as exc:  # the user's to mend: no traceback
        raise click.ClickException(str(exc)) from None
    if result.validations:
        last = result.validations[-1]
        click.echo(
            f"done: step {result.step}, validation PSNR {last['val_psnr']:.2f} dB, "
            f"SSIM {last['val_ssim']:.4f}; the checkpoint is in {result.out}"
        )
