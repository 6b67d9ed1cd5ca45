"""The runner's commands for the CLI: train, eval, sample, plot.

Kept apart from specc.cli so that check, summary and ir never import the
runner (and so never a framework).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_runner_commands(sub) -> None:
    t = sub.add_parser("train", help="train a model on its train block's data")
    t.add_argument("file", metavar="FILE")
    t.add_argument("--model", help="the model to train (needed when the file trains several)")
    t.add_argument("--backend", choices=("jax", "torch"), default="jax")
    t.add_argument("--epochs", type=_integer, help="override the train block's epochs")
    t.add_argument("--batch", type=_integer, help="override the batch size")
    t.add_argument("--lr", type=_number, help="override the optimiser's learning rate")
    t.add_argument("--seed", type=_integer, help="override the seed (initial weights and batch order)")
    t.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<backend>-<time>/)")
    t.add_argument("--data-dir", metavar="DIR", help="where to look for data first")
    t.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    t.add_argument("--limit", type=_integer, metavar="N", help="use only the first N training samples")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last completed epoch")
    t.add_argument("--quiet", action="store_true", help="no progress bar or epoch table")
    f = t.add_argument_group("speed (README: Performance)")
    f.add_argument("--precision", choices=("f32", "mixed"), default="f32",
                   help="mixed: bf16 compute, float32 weights, optimiser state and loss (default f32)")
    f.add_argument("--no-channels-last", action="store_true",
                   help="torch: keep convolutions in the default (channels-first) memory format")
    f.add_argument("--compile", action="store_true", help="torch: torch.compile the train forward (inductor)")
    f.add_argument("--no-xla-defaults", action="store_true",
                   help="jax: leave out specc's XLA:CPU settings (as SPECC_XLA_DEFAULTS=0 does)")
    d = t.add_argument_group("data parallel (README: Several devices)")
    d.add_argument("--devices", type=_integer, default=1, metavar="N",
                   help="split each batch over N devices of --device (torch: N worker processes; "
                        "jax on CPU: N host devices)")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="jax, several processes: process 0's address")
    d.add_argument("--num-processes", type=_integer, metavar="P", help="jax, several processes: how many")
    d.add_argument("--process-id", type=_integer, metavar="I", help="jax, several processes: this one's index")
    t.set_defaults(run=cmd_train)

    e = sub.add_parser("eval", help="test figures of saved weights, on either backend (a GAN's: its scores)")
    e.add_argument("file", metavar="FILE")
    e.add_argument("--weights", required=True, metavar="W",
                   help="a weights.safetensors file (a GAN run's is the generator's)")
    e.add_argument("--model")
    e.add_argument("--backend", choices=("jax", "torch"), default="jax")
    e.add_argument("--data-dir", metavar="DIR")
    e.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.set_defaults(run=cmd_eval)

    g = sub.add_parser("sample", help="draw samples from a trained generator into a PNG grid")
    g.add_argument("file", metavar="FILE")
    g.add_argument("--weights", required=True, metavar="W", help="the generator's weights.safetensors")
    g.add_argument("--model", help="the generator (default: the model of the file's gan train block)")
    g.add_argument("-n", type=_integer, default=64, help="how many samples (default 64)")
    g.add_argument("-o", "--out", default="samples.png", help="the PNG to write (default samples.png)")
    g.add_argument("--backend", choices=("jax", "torch"), default="jax")
    g.add_argument("--seed", type=_integer, help="the latent noise's seed (default: the train block's)")
    g.set_defaults(run=cmd_sample)

    p = sub.add_parser("plot", help="overlay the loss and accuracy curves of runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default curves.png)")
    p.set_defaults(run=cmd_plot)


def _integer(text: str) -> int:
    """argparse type: the text must be an integer (its range is checked with
    the train block's wording by specc.validate)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def cmd_train(args) -> int:
    from .distributed import torch_worker_env
    from .plan import SpeedChoices
    from .runner import Interrupted, Options, train_model

    opts = Options(backend=args.backend, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                   out=args.out, data_dir=args.data_dir, device=args.device, limit=args.limit,
                   quiet=args.quiet, resume=args.resume, devices=args.devices, coordinator=args.coordinator,
                   num_processes=args.num_processes, process_id=args.process_id, precision=args.precision,
                   speed=SpeedChoices(channels_last=not args.no_channels_last, compile=args.compile,
                                      xla_defaults=not args.no_xla_defaults))
    if args.no_xla_defaults:  # read when jax starts its backend, in this process and in any it launches
        os.environ["SPECC_XLA_DEFAULTS"] = "0"
    if args.backend == "torch" and args.devices > 1 and torch_worker_env() is None:
        return _launch_torch_workers(args, opts)
    try:
        run = train_model(args.file, args.model, opts)
    except Interrupted as err:  # not a mistake: the message is how to resume
        print(f"specc: {err}", file=sys.stderr)
        return 130
    if args.quiet and run.chief:
        print(json.dumps(run.result))
    return 0


def _launch_torch_workers(args, opts) -> int:
    """`--backend torch --devices N`: N worker processes through torch's
    elastic launcher, as `torchrun --nproc_per_node N` starts them; each runs
    this command again as one rank. The spec, the flags and the batch are
    checked here first, so a mistake is reported once, not by every worker."""
    from .backend import get
    from .runner import check_launch

    check_launch(args.file, args.model, opts)
    return get("torch").launch(args.argv, devices=args.devices, device=args.device)


def cmd_eval(args) -> int:
    from .runner import evaluate_weights

    result = evaluate_weights(args.file, args.model, args.weights, args.backend, args.data_dir, args.device)
    if args.format == "json":
        print(json.dumps(result))
        return 0
    figures = [f"{label} {result[key]:.4f}" for key, label in _FIGURES if result.get(key) is not None]
    count = result.get("test_samples", result.get("scored_samples"))
    print(f"{result['model']} on {result['backend']}: {', '.join(figures) or 'no scores'}"
          + (f" ({count:,} samples)" if count else ""))
    return 0


# What `specc eval` prints, in order, when the recipe reports it.
_FIGURES = (("test_loss", "test loss"), ("test_accuracy", "test accuracy"), ("mnist_is", "mnist_is"),
            ("mnist_fid", "mnist_fid"))


def cmd_sample(args) -> int:
    from .runner import sample_weights

    path = sample_weights(args.file, args.model, args.weights, args.n, args.out, args.backend, args.seed)
    print(f"wrote {path}")
    return 0


def cmd_plot(args) -> int:
    from .errors import UserError
    from .rundir import check_plot_runs

    check_plot_runs(args.runs, args.out)
    try:
        from .plot import plot_runs
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install 'specc[plot]'") from None
    print(f"wrote {plot_runs(args.runs, args.out)}")
    return 0
