"""`hvuio demo --lifecycle` without root: the line each event prints as it ends (text and --json)
and the report's summary line."""

from __future__ import annotations

import json

from hvuio.cli.demo import step_line
from hvuio.demo_lifecycle import EVENTS, Step


def _held(event: str) -> dict[str, object]:
    return Step(event, "the host indicates a network change", ok=True, taken_s=1.5, recovery_s=3.25, ping=True,
                tcp={"ok": True, "bytes": 262144, "seconds": 0.01}, same_tap=True).to_dict()


def test_an_event_that_held_says_how_long_it_took_and_what_was_checked() -> None:
    line = step_line(_held("network_change"), as_json=False)
    assert line.startswith("ok   network_change ") and "taken in 1.5 s" in line and "after 3.2 s" in line
    assert "echoed 262144 bytes exactly" in line and "same tap and addresses" in line and "\n" not in line


def test_an_event_that_failed_names_it_and_why() -> None:
    step = Step("rescind", "the host rescinds the NIC and offers it again",
                error="hvuio up did not take the event within 60 s").to_dict()
    assert step_line(step, as_json=False) == ("FAIL rescind         the host rescinds the NIC and offers it again: "
                                             "hvuio up did not take the event within 60 s")


def test_json_lines_carry_the_whole_step() -> None:
    step = _held("mtu")
    assert json.loads(step_line(step, as_json=True)) == {"lifecycle": step}


def test_the_events_are_played_in_the_order_of_a_hosts_life() -> None:
    assert [e.name for e in EVENTS] == ["mtu", "network_change", "link_flap", "vf", "rescind", "silent_stop"]
