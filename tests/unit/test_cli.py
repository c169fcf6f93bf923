"""The command line's contract: help everywhere, documented, usage errors exit 2."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from djhpc.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(main.commands)


def test_the_contract_commands_exist() -> None:
    assert {"submit", "status", "errors", "logs", "cancel", "retry", "doctor"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "-h"])
    assert result.exit_code == 0, result.output
    assert main.commands[command].help and len(main.commands[command].help) > 20


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme(command: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"djhpc {command}\b", readme), f"README.md never shows `djhpc {command}`"


def test_submit_options_of_the_contract() -> None:
    options = {o for p in main.commands["submit"].params for o in getattr(p, "opts", [])}
    assert {"-r", "--restrict", "--chunk-size", "--tasks", "--max-parallel", "-e", "--executor",
            "-p", "--profile", "--partition", "--account", "--qos", "--time", "--mem", "--cpus",
            "--gpus", "--dry-run", "--wait", "--json", "-y", "--yes"} <= options


@pytest.mark.parametrize("args", [
    ["submit", "x.T", "--chunk-size", "0"],
    ["submit", "x.T", "--chunk-size", "5", "--tasks", "2"],
    ["submit", "x.T", "--executor", "cloud"],
    ["logs", "notanumber"],
])
def test_usage_errors_exit_2_with_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "words"), [
    (["submit", "x.T", "--chunk-size", "abc"], "'abc' is not a valid integer"),
    (["status", "-1"], "No such option '-1'"),
    (["retry", "abc"], "'abc' is not a valid integer"),
    (["status", "--interval", "-1"], "--interval"),
    (["nosuchcommand"], "No such command"),
    (["submit", "x.T", "--make-kwargs", "{oops"], "--make-kwargs is not valid JSON"),
    (["submit", "x.T", "--make-kwargs", '"text"'], "must be a JSON object, not str"),
])
def test_click_usage_errors_in_the_contracts_form(args: list[str], words: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], lines
    assert result.stdout == ""


def test_bare_command_still_shows_help() -> None:
    result = CliRunner().invoke(main, [])
    assert "Usage: " in result.output and "Populate DataJoint tables" in result.output
    assert "Error:" not in result.output


def test_make_kwargs_option_exists() -> None:
    options = {o for p in main.commands["submit"].params for o in getattr(p, "opts", [])}
    assert "--make-kwargs" in options
