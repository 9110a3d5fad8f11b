"""The CLI's shared words, defined once: every command that samples a run takes the same sampling flags with the same
meaning and builds the same `SampleRequest` the Python API builds; `--n` is always a number of images, `--steps`
always sampling steps (`--train-steps` is a training length), `--device` always defaults to auto, and every --help
shows the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CACHE_DIR = "~/.cache/difflab"
DEVICE_HELP = "auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, plus '(default: X)' on every option whose default is a value and whose help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # `is`, not `in`: 0 == False, and a default of 0 must be shown.
        if default is None or default is False or default is argparse.SUPPRESS or "default" in text or not action.option_strings:
            return text
        if isinstance(default, (list, tuple)):
            if not default:
                return text
            default = " ".join(map(str, default))
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """Every difflab parser (sub-commands inherit it): defaults shown in --help, and a bad command line is a one-line
    `error: ...` with exit status 2 like every other user mistake (argparse's own error prints the usage too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        import re

        from difflab.errors import UserError

        m = re.match(r"argument ([^:]+): invalid choice: (.*?) \(choose from (.*)\)$", message)
        if m:
            flag = m.group(1).split("/")[-1]
            choices = ", ".join(c.strip().strip("'") for c in m.group(3).split(","))
            message = f"unknown {flag} {m.group(2)}; valid: {choices}"
        raise UserError(f"{message} (see `{self.prog} --help`)")


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    """['order=3', 'eta=0.5'] -> {'order': '3', 'eta': '0.5'}; a malformed item is a one-line error."""
    from difflab.errors import UserError

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} expects KEY=VALUE (e.g. {flag} order=3); got '{item}'")
        out[key.strip()] = value.strip()
    return out


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, default=None, help=f"where trained feature networks are cached (default {DEFAULT_CACHE_DIR})")


def cache_dir(args: argparse.Namespace) -> Path:
    return (args.cache_dir or Path(DEFAULT_CACHE_DIR)).expanduser()


def add_sampler_args(p: argparse.ArgumentParser, *, sampler_default: str | None = None, steps_default: int | None = None,
                     spacing: bool = True, what: str = "") -> None:
    """--sampler, --steps, --spacing, --timesteps, --search-batch, --sampler-opt: which sampler and which timesteps."""
    from difflab.samplers import SAMPLERS, SPACINGS

    own = "the run's sample.sampler" if sampler_default is None else None
    p.add_argument("--sampler", choices=list(SAMPLERS), default=sampler_default,
                   help=f"sampler{what} (`difflab samplers` lists them)" + (f"; default: {own}" if own else ""))
    p.add_argument("--steps", type=int, default=steps_default,
                   help=f"number of sampling steps{what}" + ("; default: the run's sample.steps" if steps_default is None else ""))
    p.add_argument("--sampler-opt", dest="sampler_opts", action="append", default=[], metavar="KEY=VALUE",
                   help="a keyword option of the sampler, e.g. eta=0.5 (ddim), order=3 (unipc), S_churn=10 (heun), n_corrector=2 (pc); "
                        "repeatable; `difflab samplers` lists each sampler's options")
    if spacing:
        p.add_argument("--spacing", choices=[*SPACINGS, "searched"], default=None,
                       help="how the steps are spread over 0..T-1; 'searched' fits them to this model and sampler first "
                            "(docs/samplers.md); default: the run's sample.spacing")
        p.add_argument("--timesteps", default=None, metavar="LIST|FILE.json",
                       help="visit exactly these timesteps, e.g. 999,600,0 or a JSON list (what --spacing searched prints); "
                            "replaces --steps/--spacing")
        p.add_argument("--search-batch", type=int, default=256, help="--spacing searched: number of x_T the schedule is searched on")


def add_guidance_args(p: argparse.ArgumentParser) -> None:
    """--class, --guidance, --scale, --classifier, --base."""
    p.add_argument("--class", dest="classes", type=int, default=None,
                   help="class label of every image, for a class-conditional model or for guidance; default: cycle through the classes")
    p.add_argument("--guidance", choices=("none", "classifier", "cfg"), default="none",
                   help="'classifier': ADM classifier guidance with --classifier (Dhariwal & Nichol 2021); 'cfg': classifier-free guidance "
                        "of a model trained with label dropout (Ho & Salimans 2022); docs/guidance.md says which samplers take which")
    p.add_argument("--scale", type=float, default=None,
                   help="guidance scale: s of classifier guidance, w of cfg (eps = (1+w) eps_cond - w eps_null); default 1")
    p.add_argument("--classifier", type=Path, default=None, help="noise-aware classifier run (from `difflab classifier train`), for --guidance classifier")
    p.add_argument("--base", choices=("auto", "cond", "uncond"), default="auto",
                   help="classifier guidance of the conditional prediction ('cond') or the unconditional one ('uncond': an unconditional "
                        "model, or the null label of a model trained with label dropout); 'auto': cond when the model is class-conditional")


def add_sampling_args(p: argparse.ArgumentParser, *, n_default: int, guidance: bool = True, batch_default: int = 256) -> None:
    """Everything `difflab sample` takes to draw images from a run, for any command that samples one."""
    add_sampler_args(p)
    p.add_argument("--n", type=int, default=n_default, help="number of images")
    p.add_argument("--batch-size", type=int, default=batch_default, help="images per network batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise x_T and of stochastic samplers")
    if guidance:
        add_guidance_args(p)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    add_device(p)


def sample_request(args: argparse.Namespace, run=None):
    """The SampleRequest of the sampling flags (add_sampling_args): what the Python API's `Run.sample` builds too."""
    from difflab.pipelines.sample import SampleRequest

    return SampleRequest(run=run, n=args.n, sampler=args.sampler, steps=args.steps, spacing=getattr(args, "spacing", None),
                         timesteps=getattr(args, "timesteps", None), sampler_options=parse_key_values(args.sampler_opts, "--sampler-opt"),
                         batch_size=args.batch_size, seed=args.seed, classes=getattr(args, "classes", None),
                         ema=not getattr(args, "no_ema", False), device=args.device, guidance=getattr(args, "guidance", "none"),
                         scale=getattr(args, "scale", None), classifier=getattr(args, "classifier", None), base=getattr(args, "base", "auto"),
                         search_batch=getattr(args, "search_batch", 256))


def check_out_file(out: Path | None, force: bool, suffixes: tuple[str, ...]) -> None:
    """--out names a file: one of `suffixes`, not a folder, not overwritten without --force."""
    from difflab.errors import UserError

    if out is None:
        return
    if out.suffix.lower() not in suffixes:
        raise UserError(f"--out must end in {' or '.join(suffixes)}; got {out.name}")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a {' or '.join(suffixes)} file")
    check_parent_folder(out)
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --out or add --force to overwrite it")


def check_parent_folder(out: Path) -> None:
    """Fail before any work when --out cannot be created: a part of its path is a file."""
    from difflab.errors import UserError

    for parent in Path(out).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
            return


def set_threads(n: int | None) -> None:
    """--threads: torch's intra-op threads for this process (the CLI's choice, never the library's)."""
    from difflab.errors import UserError

    if n is None:
        return
    if n < 1:
        raise UserError(f"--threads must be at least 1; got {n}")
    import torch

    torch.set_num_threads(n)
