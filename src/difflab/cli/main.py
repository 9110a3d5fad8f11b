"""`difflab <command>`: parse, validate, call the library, print. No math here."""

from __future__ import annotations

import argparse
import os
import sys

from difflab.errors import Stopped, UserError


def build_parser() -> argparse.ArgumentParser:
    from difflab.cli import ablation, classifier, compare, demo, distill, eval, export, importer, info, interpolate, report, restore, sample, sweep, train
    from difflab.cli.options import Parser

    parser = Parser(prog="difflab", description="Train, sample, guide and evaluate diffusion models (and their baselines).")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error instead of the one-line message (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (train, sample, info, demo, eval, classifier, sweep, compare, ablation, restore, interpolate, importer, export, report,
                   distill):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`difflab config --keys | head`): not an error of ours; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # the file system said no (permissions, full disk, read-only, missing): the user's to fix
        if debug:
            raise
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if debug or not (isinstance(e, MemoryError) or "allocate" in str(e) or "out of memory" in str(e)):
            raise
        print("error: out of memory: lower --batch-size (or --n, or train.batch_size with train.grad_accum)", file=sys.stderr)
        return 2
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 128 + e.signal_number
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def os_error_message(e: OSError) -> str:
    """One line for a file-system fault: what failed, on which path, and what to do."""
    import errno

    hints = {errno.EACCES: "check its permissions", errno.EPERM: "check its permissions", errno.ENOSPC: "free some disk space",
             errno.EROFS: "the file system is read-only: write somewhere else", errno.ENOENT: "check the path",
             errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EISDIR: "give a file, not a folder",
             errno.EDQUOT: "the disk quota is full"}
    path = f" {e.filename}" if e.filename else ""
    return f"{e.strerror or e}:{path}; {hints.get(e.errno, 'check the path')}"


if __name__ == "__main__":
    sys.exit(main())
