"""CLI words mean one thing in every command: checked over every parser, so a new command cannot drift."""

import argparse

import pytest

from conftest import cli, one_line_error
from difflab.cli.main import build_parser
from difflab.cli.options import HelpFormatter


def commands():
    """(name, parser) of every leaf command, e.g. ('sweep guidance', parser)."""
    out = []

    def walk(prefix, parser):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((prefix.strip(), parser))
        for sub in subs:
            for name, child in sub.choices.items():
                walk(f"{prefix} {name}", child)

    walk("", build_parser())
    return out


COMMANDS = commands()
NAMES = [n for n, _ in COMMANDS]


def options(parser):
    return {s: a for a in parser._actions for s in a.option_strings}


def test_every_command_is_found():
    assert {"train", "sample", "eval", "stats", "nll", "classifier train", "sweep guidance", "compare", "ablation ddpm", "inpaint",
            "denoise", "img2img", "restore", "interpolate", "import guided-diffusion", "model", "config", "samplers", "demo"} <= set(NAMES)


@pytest.mark.parametrize("name,parser", COMMANDS, ids=NAMES)
def test_help_shows_every_default(name, parser):
    help_text = parser.format_help()
    assert parser.formatter_class is HelpFormatter
    for action in parser._actions:
        d = action.default
        if not action.option_strings or d is None or d is False or d is argparse.SUPPRESS or d == [] or action.help == argparse.SUPPRESS:
            continue
        shown = HelpFormatter("x")._get_help_string(action)
        assert "default" in shown, f"{name} {action.option_strings[0]}: no default in its help"
    assert "usage:" in help_text
    if "--seed" in options(parser) and options(parser)["--seed"].default == 0:
        assert "(default: 0)" in " ".join(help_text.split()), name  # a zero default is shown too


@pytest.mark.parametrize("name,parser", COMMANDS, ids=NAMES)
def test_shared_words(name, parser):
    opts = options(parser)
    if "--device" in opts:
        assert opts["--device"].default == "auto", name
    if "--steps" in opts:  # sampling steps, never a training length (that is --train-steps)
        assert "train" not in (opts["--steps"].help or "").lower() or "training" not in opts["--steps"].help, name
        assert "step" in opts["--steps"].help
    if "--n" in opts:
        assert "number of images" in opts["--n"].help, f"{name}: --n is '{opts['--n'].help}'"
    if "--out" in opts:
        assert opts["--out"].help.startswith(("a file", "a folder")), f"{name}: --out does not say file or folder"
    for flag in ("--sampler", "--spacing", "--method", "--hutchinson", "--guidance", "--base", "--resize"):
        if flag in opts:
            assert opts[flag].choices, f"{name} {flag} is a free string; give it choices"
    assert "--eta" not in opts and "--sample-steps" not in opts, name


def test_sampler_choices_are_the_registry():
    from difflab.samplers import SAMPLERS

    sample = dict(COMMANDS)["sample"]
    assert list(options(sample)["--sampler"].choices) == list(SAMPLERS)


def test_a_bad_choice_is_one_line_naming_the_valid_ones(capsys, tmp_path):
    code, _, err = cli(["nll", "--run", tmp_path, "--method", "bound"], capsys)
    line = one_line_error(code, err)
    assert "unknown --method 'bound'; valid: vlb, ode" in line and "difflab nll --help" in line
    code, _, err = cli(["sample", "--run", tmp_path, "--out", tmp_path / "x.png", "--n", "many"], capsys)
    assert "argument --n: invalid int value: 'many'" in one_line_error(code, err)
    code, _, err = cli(["sample"], capsys)
    assert "required" in one_line_error(code, err)
