"""`difflab <command>`: parse, validate, call the library, print. No math here."""

from __future__ import annotations

import argparse
import os
import sys

from difflab.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from difflab.cli import ablation, classifier, compare, demo, eval, export, importer, info, interpolate, restore, sample, sweep, train
    from difflab.cli.options import Parser

    parser = Parser(prog="difflab", description="Train, sample, guide and evaluate diffusion models (and their baselines).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (train, sample, info, demo, eval, classifier, sweep, compare, ablation, restore, interpolate, importer, export):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`difflab config --keys | head`): not an error of ours; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
