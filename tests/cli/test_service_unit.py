"""The systemd unit (systemd/hvuio@.service) and its example configuration: every command the unit
runs is one the hvuio command line accepts, with the configuration's values put in as systemd
would, and systemd's own checker takes the unit."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from hvuio.cli import cli

from support.paths import ROOT

UNIT = ROOT / "systemd" / "hvuio@.service"
EXAMPLE = ROOT / "systemd" / "hvuio.conf.example"
GUID = "6f0e2a1c-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


def _unit() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def _config() -> dict[str, str]:
    out = {}
    for line in EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _expand(command: str, tap: str, env: dict[str, str]) -> list[str]:
    """A command line as systemd runs it: %i is the instance, ${X} one word, $X split on spaces."""
    words = []
    for word in command.replace("%i", tap).split():
        if word.startswith("${"):
            words.append(env[word[2:-1]])
        elif word.startswith("$"):
            words.extend(shlex.split(env[word[1:]]))
        else:
            words.append(word)
    return words


def _parse(argv: list[str]) -> click.Context:
    """The context of hvuio's subcommand for `argv` (options checked as when it runs); the group's
    own options before it (-v, -q, --debug) take no value."""
    assert argv[0] == "hvuio"
    words = argv[1:]
    while words[0].startswith("-"):
        assert words.pop(0) in ("-v", "-vv", "-q", "--debug"), argv
    sub = cli.commands[words[0]]
    return sub.make_context(words[0], words[1:])


@pytest.mark.parametrize("key", ["ExecStartPre", "ExecStart"])
def test_each_command_of_the_unit_is_one_hvuio_accepts(key: str) -> None:
    env = {**_config(), "DEVICE": GUID}
    (command,) = _unit()[key]
    sub_ctx = _parse(_expand(command, "hvu0", env))
    assert sub_ctx.params["device"] == GUID
    if sub_ctx.info_name == "up":
        assert sub_ctx.params["ifname"] == "hvu0" and sub_ctx.params["persist"]
        assert sub_ctx.params["queues"] == 4


def test_a_bad_option_in_the_configuration_is_refused_by_the_same_check() -> None:
    env = {**_config(), "DEVICE": GUID, "OPTIONS": "--queues 0"}
    with pytest.raises(click.BadParameter):
        _parse(_expand(_unit()["ExecStart"][0], "hvu0", env))


def test_the_unit_waits_for_readiness_and_reads_the_instance_configuration() -> None:
    unit = _unit()
    assert unit["Type"] == ["notify"] and unit["EnvironmentFile"] == ["/etc/hvuio/%i.conf"]
    assert unit["Restart"] == ["on-failure"]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    fake = tmp_path / "hvuio"  # systemd checks that the command exists; the unit names it by search path
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    text = UNIT.read_text().replace("=hvuio ", f"={fake} ").replace("/etc/hvuio/%i.conf", str(EXAMPLE))
    (tmp_path / "hvuio@hvu0.service").write_text(text)
    done = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "hvuio@hvu0.service")],
                          capture_output=True, text=True, timeout=60)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "hvuio@hvu0.service" in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr
