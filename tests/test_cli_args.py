"""The `linewatch` command's shared pieces: registration, shared options, and library settings printed as options."""

from __future__ import annotations

import argparse

import pytest

from linewatch import cli
from linewatch.cli import build_parser, main
from linewatch.cli.args import (
    add_backend,
    add_command,
    add_max_batch,
    check_min,
    floats_arg,
    option_names,
    parse_size,
    parse_triple,
    with_options,
)
from linewatch.errors import UsageError


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    top = argparse.ArgumentParser(prog="t")
    sub = top.add_subparsers(dest="command")
    p = add_command(sub, "go", lambda args: 7, help="go somewhere", description="Go.\n  indented", raw=True)
    return top, p


def test_add_command_registers_its_run_and_keeps_a_raw_description():
    top, p = _parser()
    args = top.parse_args(["go"])
    assert args.func(args) == 7
    assert "Go.\n  indented" in p.format_help()


def test_option_names_map_each_dest_to_its_first_long_option():
    top, p = _parser()
    add_backend(p)
    p.add_argument("--engine", dest="backend")  # an alias: the first spelling names the setting
    add_max_batch(p, default=8, help="frames per call")
    p.add_argument("--pos-weight", type=floats_arg(2, "3,1"))
    p.add_argument("images", nargs="*")  # positionals have no option
    names = option_names(top)  # reaches into subcommands
    assert names["backend"] == "--backend" and names["max_batch"] == "--max-batch"
    assert names["pos_weight"] == "--pos-weight" and "images" not in names


def test_with_options_replaces_only_the_backquoted_settings_the_command_has():
    names = {"pos_weight": "--pos-weight", "out": "--out", "resume": "--resume"}
    assert with_options("`pos_weight` (0, 1) is invalid", names) == "--pos-weight (0, 1) is invalid"
    assert (with_options("r already holds a run; use `resume` to continue it, or a new `out`", names)
            == "r already holds a run; use --resume to continue it, or a new --out")
    assert with_options("run `linewatch export` or set `threads`", names) == "run `linewatch export` or set `threads`"


def test_a_library_setting_error_is_printed_with_the_commands_option(tmp_path, capsys):
    rc = main(["calibrate", "--profile", str(tmp_path / "s.toml"), "--data", str(tmp_path), "--target-tnr", "1.5"])
    assert rc == 2
    assert "linewatch calibrate: error: --target-tnr 1.5: must be in (0, 1]" in capsys.readouterr().err


def test_every_command_is_registered_under_its_name_with_its_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [command for command, _module in cli.COMMANDS]
    assert sub.choices["data"].get_default("option_names")["max_problems"] == "--max-problems"  # nested too
    assert all(p.get_default("option_names") for p in sub.choices.values())


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, ("nope", "not_a_command_module")))
    with pytest.raises(ModuleNotFoundError, match="not_a_command_module"):
        build_parser()


def test_value_parsers_name_the_option():
    assert floats_arg(2, "3,1")("2,0.5") == (2.0, 0.5)
    with pytest.raises(argparse.ArgumentTypeError, match="expected 2 comma-separated numbers, e.g. 3,1"):
        floats_arg(2, "3,1")("2")
    assert parse_triple("8x16x32", "widths") == (8, 16, 32)
    with pytest.raises(UsageError, match="--widths '8,16' is invalid"):
        parse_triple("8,16", "widths")
    assert parse_size("64X96") == (64, 96)
    with pytest.raises(UsageError, match="--input-size '60x96': height and width must be positive multiples of 8"):
        parse_size("60x96")
    check_min("--max-batch", None, 1)  # not given
    check_min("--max-batch", 1, 1)
    with pytest.raises(UsageError, match="--workspace 32 MiB: must be >= 64"):
        check_min("--workspace", 32, 64, " MiB")
