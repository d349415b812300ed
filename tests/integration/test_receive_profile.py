"""``benchmarks/receive_profile.py``: where one C-STORE's time goes (issue 14).

The parts' arithmetic on given timings, and one small real run (dcmtk storescu to storescp and
to the node with its receive path timed) whose figures must add up.
"""

from __future__ import annotations

import shutil

import pytest

from benchmarks.receive_profile import PARTS, TIMED, Timers, run


def test_parts_are_exclusive_where_the_timed_functions_nest() -> None:
    timers = Timers()
    ns = {"read": 900, "feed": 700, "open": 50, "finish": 400, "close": 220, "writev": 200}
    ns |= {"scan": 60, "place": 80, "respond": 70}
    timers.cpu.update({label: value * 1000 for label, value in ns.items()})
    parts = {part: round(seconds * 1e6) for part, seconds in timers.parts_s().items()}
    assert parts == {
        "socket reads, PDU framing": 200,  # read - feed
        "lane": 180,  # feed - open - finish - respond
        "temp file create": 50,
        "data set write": 200,
        "temp file close": 20,  # close - writev
        "header scan": 60,
        "spool move": 80,
        "event hand-off": 40,  # finish - close - scan - place
        "C-STORE-RSP": 70,
    }
    assert sum(parts.values()) == ns["read"]  # nothing counted twice, nothing lost
    assert set(PARTS) == set(parts) and {t for _, plus, minus in PARTS.values() for t in plus + minus} == set(TIMED)


@pytest.mark.skipif(not shutil.which("storescp"), reason="dcmtk is not installed")
def test_a_small_run_adds_up() -> None:
    n = 60  # enough for the node's /proc CPU (10 ms ticks) to see the association thread
    result = run(instances=n, rounds=1, associations=1)
    assert result["inst_per_s"]["storescp"] > 0 and result["inst_per_s"]["node"] > 0
    scp, node = result["us_per_instance"]["storescp"], result["us_per_instance"]["node"]
    assert scp["senders' CPU"] > 0 and scp["receiver's CPU"] > 0
    assert node["association threads"] > 0
    parts = [value for key, value in node.items() if key.startswith("  ") and key != "  reactor loop and the rest"]
    assert len(parts) == len(PARTS) and all(value >= 0 for value in parts)
    # each instance went through the timed functions (a part never timed would read 0.0)
    assert node["  temp file create"] > 0 and node["  data set write"] > 0 and node["  header scan"] > 0
    tick_us = 10_000 / n  # /proc's CPU clock ticks, per instance
    assert sum(parts) <= node["association threads"] * 1.05 + 2 * tick_us
    assert node["neither sender's nor association's CPU"] == pytest.approx(
        node["round trip (1 / rate)"] - node["senders' CPU"] - node["association threads"], abs=0.2
    )
