"""How join/clocks.py sets two hosts' clocks beside each other: the claims, the traffic.

The least wire times each way are what the engine measures on uncorrected clocks; here
they are made from a known offset and known least delays, so the truth is known.
"""

from __future__ import annotations

from udptrace.join.clocks import PairClock, claimed_error_ns
from udptrace.join.recordings import Host

US = 1000


def host(name: str, maxerror_ns: int | None) -> Host:
    sync = ({"synchronised": False} if maxerror_ns is None else
            {"synchronised": True, "maxerror_ns": maxerror_ns})
    return Host(0, f"{name}-boot", name, syncs=[sync], bracket_ns=2 * US)


def measured_pair(sender: Host, receiver: Host, offset: int, there: int, back: int) -> PairClock:
    """The receiver's clock `offset` ahead; the least wire times `there` and `back`."""
    pair = PairClock(sender, receiver, least_wire_ns=there + offset, least_back_ns=back - offset)
    pair.decide()
    return pair


def test_traffic_both_ways_measures_the_offset_within_half_the_round_trip() -> None:
    pair = measured_pair(host("a", None), host("b", None), 5_000 * US, 300 * US, 100 * US)
    assert pair.how == "measured from the traffic both ways"
    # the middle assumes equal least delays: off by half their difference, within the bound
    assert pair.offset_ns == 5_000 * US + 100 * US
    assert pair.uncertainty_ns == 200 * US + 2 * US  # half the round trip, and the brackets
    assert abs(pair.offset_ns - 5_000 * US) <= pair.uncertainty_ns
    assert any("not synchronised" in r for r in pair.remarks)


def test_a_tighter_claim_wins_and_a_looser_one_is_said_to_be_looser() -> None:
    tight = measured_pair(host("a", 10 * US), host("b", 10 * US), 0, 300 * US, 100 * US)
    assert (tight.how, tight.offset_ns, tight.uncertainty_ns) == ("as the clocks claim", 0,
                                                                  22 * US)
    loose = measured_pair(host("a", 1_000 * US), host("b", 1_000 * US), 0, 30 * US, 10 * US)
    assert loose.how == "measured from the traffic both ways"
    assert any("larger than the measured one" in r for r in loose.remarks)


def test_a_claim_the_traffic_contradicts_is_called_wrong() -> None:
    pair = measured_pair(host("a", 10 * US), host("b", 10 * US), 5_000 * US, 30 * US, 10 * US)
    assert any("the claim is wrong" in r for r in pair.remarks), pair.remarks


def test_one_way_without_a_claim_is_unknown_and_bounded_on_one_side() -> None:
    pair = PairClock(host("a", None), host("b", None), least_wire_ns=-286_000 * US)
    pair.decide()
    assert pair.uncertainty_ns is None and pair.offset_ns == 0
    assert pair.how.startswith("unknown")
    assert any("at least 286.00 ms behind a's" in r for r in pair.remarks), pair.remarks


def test_one_boot_is_one_clock() -> None:
    same = host("a", None)
    pair = PairClock(same, same, least_wire_ns=5, least_back_ns=5)
    pair.decide()
    assert (pair.offset_ns, pair.uncertainty_ns, pair.measured) == (0, 0, None)


def test_a_host_unsynchronised_at_any_part_claims_nothing() -> None:
    flaky = host("a", 10 * US)
    flaky.syncs.append({"synchronised": False})
    assert claimed_error_ns(flaky) is None
    assert claimed_error_ns(host("b", 10 * US)) == 11 * US  # with half the widest bracket
