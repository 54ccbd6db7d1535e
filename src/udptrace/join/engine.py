"""The join itself: DuckDB queries over the recordings' departures and arrivals.

Matching. A datagram's key is a hash of what both kernels see alike (ports, UDP length,
and the fingerprint and PubSub ids and sequence numbers where every recording has
them). A departure and an arrival are candidates when their keys are equal and the
arrival came within the window of the departure, on the corrected clocks. The
equi-join runs on (key, time bucket) rather than the key alone, so datagrams that
share a key over the run (a sequence number that wrapped, a payload that never
changes) are only ever paired within a bucket's reach, never all with all.

Copies of one datagram delivered to several sockets of one host are one *landing* (one
recording, one key, one time at the driver). A departure with exactly one landing in a
recording, whose landing has exactly that one departure, is joined; every other
candidate pair is *ambiguous*: counted and shown, never joined.

Two passes: the first on the clocks as the recordings state them, with a window wide
enough for an unsynchronised clock, gives the least wire time per pair of hosts and
direction (join/clocks.py turns those into offsets); the second matches again on the
corrected clocks, in a window of the configured width plus the clocks' uncertainty.

Then per departure and receiving recording one outcome: arrived, dropped in the
receiver's kernel, ambiguous, lost between the hosts (it left the sender's device, the
receiver was recording and saw the flow, and it never reached the receiver's driver),
or not covered (the receiver's recording had not begun or had ended); a departure
dropped in the sender's kernel is that, for every receiver of its flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from udptrace.join.clocks import PairClock
from udptrace.join.recordings import (
    IDENTITY,
    Host,
    Recording,
    arrivals_sql,
    departures_sql,
    segments,
)

HOP_COLUMNS = ("sender_app_ns", "sender_stack_ns", "wire_ns", "receiver_stack_ns",
               "reader_ns", "one_way_ns")


@dataclass(frozen=True)
class Window:
    latency_ns: int  # the longest one-way time to look for
    max_offset_ns: int  # how far apart unsynchronised clocks may be, for the first pass


class JoinEngine:
    def __init__(self, recordings: list[Recording], hosts: list[Host], window: Window,
                 threads: int | None = None) -> None:
        self.recordings = recordings
        self.hosts = hosts
        self.window = window
        self.con = duckdb.connect()
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.pairs: dict[tuple[int, int], PairClock] = {}

    def rows(self, query: str, *params: object) -> list[tuple]:
        return self.con.execute(query, list(params)).fetchall()

    # -- tables ---------------------------------------------------------------------------

    def load(self) -> None:
        shared = [c for c in IDENTITY if all(c in r.columns for r in self.recordings)]
        self.identity = shared
        parts = ["sport", "dport", "udp_len", *shared]
        if "fingerprint" in shared and "pubsub_sequence_number" in shared:
            # where the UADP header numbers the datagram, that tells it apart, and the
            # fingerprint would only add where a kernel could not read the bytes (0)
            parts[3] = ("CASE WHEN pubsub_sequence_number IS NULL AND "
                        "pubsub_dataset_sequence_number IS NULL THEN fingerprint END")
        key = "hash(" + ", ".join(parts) + ")"
        recs = pa.table({
            "rec": pa.array([r.index for r in self.recordings], pa.int32()),
            "host": pa.array([r.host.index if r.host else -1 for r in self.recordings],
                             pa.int32()),
            "label": [r.label for r in self.recordings],
            "start_t": [r.span_mono[0] for r in self.recordings],
            "end_t": [r.span_mono[1] for r in self.recordings],
            "start_c": [r.span_scale[0] for r in self.recordings],
            "end_c": [r.span_scale[1] for r in self.recordings]})
        self.con.register("recs", recs)
        self.con.register("segments", segments(self.hosts))
        # straight from the parts into tables (never out to Python and back: importing a
        # million rows from Arrow took longer than the whole match); the timescale through
        # the sample before each time, at the slope to the next
        scaled = ("{t} + s.offset + CAST(round(s.slope * ({t} - s.mono_from)) AS BIGINT)")
        self.con.execute(f"""
            CREATE TABLE d AS
            WITH raw AS (SELECT x.*, recs.host, coalesce(t_left, t_syscall) AS anchor
                         FROM ({departures_sql(self.recordings)}) x JOIN recs USING (rec)),
                 scaled AS (SELECT raw.*, {scaled.format(t="anchor")} AS c_anchor
                            FROM raw ASOF JOIN segments s
                              ON raw.host = s.host AND raw.anchor >= s.mono_from)
            SELECT row_number() OVER () - 1 AS dep_id, * EXCLUDE (anchor, c_anchor),
                   c_anchor - (anchor - t_syscall) AS c_syscall,
                   CASE WHEN t_left IS NOT NULL THEN c_anchor END AS c_left, {key} AS key,
                   hash(rec, pid, saddr, sport, daddr, dport) AS flow_key
            FROM scaled""")
        self.con.execute(f"""
            CREATE TABLE a AS
            WITH raw AS (SELECT x.*, recs.host
                         FROM ({arrivals_sql(self.recordings)}) x JOIN recs USING (rec))
            SELECT row_number() OVER () - 1 AS arr_id, raw.*,
                   {scaled.format(t="t_driver")} AS c_driver, {key} AS key,
                   hash(rec, {key}, t_driver) AS landing
            FROM raw ASOF JOIN segments s ON raw.host = s.host AND raw.t_driver >= s.mono_from""")
        # flows numbered by grouping, not by a window function over the whole table (that
        # sorts it, over strings): a datagram keeps its flow's hash, the numbers are looked
        # up by the few queries that show them
        self.con.execute("""
            CREATE TABLE flows AS
            SELECT row_number() OVER (ORDER BY rec, first) AS flow, flow_key
            FROM (SELECT rec, flow_key, min(t_syscall) AS first FROM d GROUP BY ALL)""")
        self.con.execute("CREATE TABLE cand (dep_id BIGINT, arr_id BIGINT, landing UBIGINT, "
                         "arr_rec BIGINT, pair INTEGER, wire BIGINT)")
        host_pairs = self.rows("""
            SELECT DISTINCT d.host AS s, a.host AS r FROM (SELECT DISTINCT host FROM d) d,
                   (SELECT DISTINCT host FROM a) a""")
        for s, r in host_pairs:
            self.pairs[(s, r)] = PairClock(self.hosts[s], self.hosts[r])

    # -- matching -------------------------------------------------------------------------

    def _candidates(self, pair_id: int, sender: int, receiver: int, low: int, high: int,
                    offset: int) -> None:
        """Candidate pairs of one sending and one receiving host whose wire time lies in
        [low, high], on the monotonic clock (one host) or the corrected timescale."""
        same = sender == receiver
        arrive, leave = ("t_driver", "t_left") if same else (f"(c_driver - {int(offset)})",
                                                             "c_left")
        bucket = max(high - low, 1)
        (base,) = self.rows(f"""SELECT least((SELECT min({arrive}) FROM a WHERE host = ?),
                                        (SELECT min({leave}) FROM d WHERE host = ?))""",
                            receiver, sender)
        if base[0] is None:
            return
        # relative to a base below every value, so integer division floors
        origin = int(base[0]) - abs(high) - abs(low) - bucket
        self.con.execute(f"""
            INSERT INTO cand
            SELECT dd.dep_id, aa.arr_id, aa.landing, aa.rec, {pair_id}, aa.x - dd.y
            FROM (SELECT *, unnest(list_distinct([(x - {high}) // {bucket},
                                                  (x - {low}) // {bucket}])) AS b
                  FROM (SELECT arr_id, landing, rec, key, {arrive} - {origin} AS x
                        FROM a WHERE host = {receiver})) aa
            JOIN (SELECT dep_id, rec, key, y, y // {bucket} AS b
                  FROM (SELECT dep_id, rec, key, {leave} - {origin} AS y
                        FROM d WHERE host = {sender} AND t_left IS NOT NULL)) dd
              ON aa.key = dd.key AND aa.b = dd.b
            WHERE aa.rec <> dd.rec AND aa.x - dd.y BETWEEN {low} AND {high}""")

    def _windows(self) -> list[tuple[int, int]]:
        """Per pair of hosts as its clocks stand: how far from zero a wire time may be (the
        uncertainty, or for clocks that claim nothing --max-offset), and the offset."""
        return [(pair.uncertainty_ns if pair.uncertainty_ns is not None
                 else self.window.max_offset_ns, pair.offset_ns) for pair in self.pairs.values()]

    def _match(self) -> None:
        self.con.execute("DELETE FROM cand")
        latency = self.window.latency_ns
        for pair_id, ((s, r), (reach, offset)) in enumerate(
                zip(self.pairs, self._windows(), strict=True)):
            # below zero too: a negative wire time is matched and shown, never hidden
            self._candidates(pair_id, s, r, -(reach + latency), reach + latency, offset)
        self.con.execute("""
            CREATE OR REPLACE TABLE links AS
            WITH per_dep AS (SELECT dep_id, arr_rec, count(DISTINCT landing) AS landings
                             FROM cand GROUP BY ALL),
                 per_landing AS (SELECT landing, count(DISTINCT dep_id) AS departures
                                 FROM cand GROUP BY ALL)
            SELECT cand.*, landings, departures,
                   landings = 1 AND departures = 1 AS unique_match
            FROM cand JOIN per_dep USING (dep_id, arr_rec) JOIN per_landing USING (landing)""")

    def _least_wires(self) -> None:
        ids = list(self.pairs)
        for pair_id, least in self.rows(
                "SELECT pair, min(wire) FROM links WHERE unique_match GROUP BY pair"):
            s, r = ids[pair_id]
            self.pairs[(s, r)].least_wire_ns = int(least)
            if (r, s) in self.pairs:
                self.pairs[(r, s)].least_back_ns = int(least)

    def run(self) -> None:
        self.load()
        for pair in self.pairs.values():
            pair.decide()  # on the claims alone: no offset, their error (or --max-offset)
        first = self._windows()
        self._match()
        self._least_wires()
        for pair in self.pairs.values():
            pair.decide()
        if self._windows() != first:  # else the second pass would find the same
            self._match()
        self._outcomes()
        self._datagrams()

    # -- outcomes -------------------------------------------------------------------------

    def _pairs_table(self) -> None:
        ids = list(self.pairs)
        self.con.register("pair_clocks", pa.table({
            "pair": list(range(len(ids))),
            "s_host": [s for s, _ in ids], "r_host": [r for _, r in ids],
            "offset_ns": [p.offset_ns for p in self.pairs.values()],
            "uncertainty_ns": pa.array([p.uncertainty_ns for p in self.pairs.values()],
                                       pa.int64())}))

    def _outcomes(self) -> None:
        self._pairs_table()
        self.con.execute("""
            CREATE OR REPLACE TABLE joined AS
            SELECT l.dep_id, l.arr_id, l.arr_rec, l.pair, l.wire,
                   l.wire >= 0 AS wire_valid,
                   p.uncertainty_ns IS NOT NULL AND l.wire >= -p.uncertainty_ns AS within_error
            FROM links l JOIN pair_clocks p USING (pair) WHERE l.unique_match""")
        # a flow is expected at a receiver that got any of it (joined or not); a departure is
        # covered there when the receiver recorded from before it left until after it would
        # have arrived (the longest wire time seen on that pair of hosts later)
        self.con.execute("""
            CREATE OR REPLACE TABLE outcome AS
            WITH expected AS (SELECT DISTINCT d.flow_key, l.arr_rec, l.pair
                              FROM links l JOIN d USING (dep_id)),
                 reach AS (SELECT pair, coalesce(max(greatest(wire, 0)), 0) AS reach
                           FROM expected LEFT JOIN joined USING (pair) GROUP BY pair),
                 ambiguous AS (SELECT DISTINCT dep_id, arr_rec FROM links
                               WHERE NOT unique_match)
            SELECT d.dep_id, e.arr_rec, e.pair, j.arr_id,
                   CASE WHEN d.fate = 'dropped' THEN 'dropped by the sender'
                        WHEN j.arr_id IS NOT NULL AND a.fate = 'dropped'
                             THEN 'dropped by the receiver'
                        WHEN j.arr_id IS NOT NULL THEN 'arrived'
                        WHEN amb.dep_id IS NOT NULL THEN 'ambiguous'
                        WHEN d.t_left IS NULL THEN 'not finished'
                        WHEN p.s_host = p.r_host AND d.t_left >= r.start_t
                             AND d.t_left + m.reach <= r.end_t THEN 'lost between the hosts'
                        WHEN p.s_host <> p.r_host AND d.c_left >= r.start_c - p.offset_ns
                             AND d.c_left + m.reach <= r.end_c - p.offset_ns
                             THEN 'lost between the hosts'
                        ELSE 'not covered' END AS outcome
            FROM d JOIN expected e USING (flow_key)
            JOIN pair_clocks p ON p.pair = e.pair
            JOIN recs r ON r.rec = e.arr_rec
            JOIN reach m ON m.pair = e.pair
            LEFT JOIN joined j ON j.dep_id = d.dep_id AND j.arr_rec = e.arr_rec
            LEFT JOIN a ON a.arr_id = j.arr_id
            LEFT JOIN ambiguous amb ON amb.dep_id = d.dep_id AND amb.arr_rec = e.arr_rec""")

    # -- what the outputs show -----------------------------------------------------------

    def _datagrams(self) -> None:
        identity = ", ".join(f"d.{c}" for c in IDENTITY)
        self.con.execute(f"""
            CREATE OR REPLACE VIEW datagrams AS
            SELECT o.outcome, f.flow, d.rec AS sender_rec, o.arr_rec AS receiver_rec,
                   d.comm AS sender_comm, d.pid AS sender_pid, d.saddr, d.sport, d.daddr,
                   d.dport, d.udp_len, {identity},
                   d.c_syscall AS sent_at_ns, d.t_syscall AS sender_mono_ns,
                   a.t_driver AS receiver_mono_ns,
                   d.t_syscall - d.t_app AS sender_app_ns,
                   d.t_left - d.t_syscall AS sender_stack_ns,
                   CASE WHEN j.wire_valid THEN j.wire END AS wire_ns,
                   j.wire AS wire_measured_ns,
                   a.t_queued - a.t_driver AS receiver_stack_ns,
                   a.t_done - a.t_queued AS reader_ns,
                   CASE WHEN j.wire_valid THEN
                       d.t_left - coalesce(d.t_app, d.t_syscall) + j.wire + a.t_done - a.t_driver
                   END AS one_way_ns,
                   CASE WHEN j.arr_id IS NOT NULL THEN p.uncertainty_ns END AS uncertainty_ns,
                   CASE WHEN j.arr_id IS NULL THEN NULL
                        WHEN j.wire_valid THEN 'valid'
                        WHEN j.within_error THEN 'below zero, within the clocks'' error'
                        ELSE 'below zero, beyond the clocks'' error' END AS clock_check,
                   CASE WHEN o.outcome = 'dropped by the sender' THEN d.drop_reason
                        ELSE a.drop_reason END AS drop_reason,
                   CASE WHEN o.outcome = 'dropped by the sender' THEN d.drop_stage
                        ELSE a.drop_stage END AS drop_stage,
                   a.comm AS reader_comm, a.pid AS reader_pid, a.fate AS receiver_fate,
                   amb.landings AS candidate_arrivals, amb.departures AS candidate_departures
            FROM outcome o JOIN d USING (dep_id) JOIN flows f USING (flow_key)
            JOIN pair_clocks p ON p.pair = o.pair
            LEFT JOIN joined j ON j.dep_id = o.dep_id AND j.arr_id = o.arr_id
            LEFT JOIN a ON a.arr_id = o.arr_id
            LEFT JOIN (SELECT dep_id, arr_rec, max(landings) AS landings,
                              max(departures) AS departures
                       FROM links WHERE NOT unique_match GROUP BY ALL) amb
                   ON o.outcome = 'ambiguous' AND amb.dep_id = o.dep_id
                  AND amb.arr_rec = o.arr_rec""")

    def linked_pairs(self) -> list[PairClock]:
        """The pairs of hosts between which some datagram went (joined or not)."""
        used = {pair for pair, in self.rows("SELECT DISTINCT pair FROM links")}
        return [p for i, p in enumerate(self.pairs.values()) if i in used]

    def _dicts(self, query: str, *params: object) -> list[dict[str, object]]:
        cursor = self.con.execute(query, list(params))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def flows(self) -> list[dict[str, object]]:
        """Per flow and receiving recording: what became of its datagrams, and each hop's
        distribution over the datagrams whose clocks agree (a valid wire time)."""
        hops = ", ".join(
            f"min({h}) AS {h}_min, quantile_disc({h}, 0.5) AS {h}_p50, "
            f"quantile_disc({h}, 0.99) AS {h}_p99, max({h}) AS {h}_max, "
            f"count({h}) AS {h}_n" for h in HOP_COLUMNS)
        return self._dicts(f"""
            SELECT flow, sender_rec, receiver_rec, any_value(sender_comm) AS comm,
                   any_value(sender_pid) AS pid, any_value(saddr) AS saddr,
                   any_value(sport) AS sport, any_value(daddr) AS daddr,
                   any_value(dport) AS dport, count(DISTINCT sender_mono_ns) AS sent,
                   count(*) FILTER (WHERE outcome = 'arrived') AS arrived,
                   count(*) FILTER (WHERE outcome = 'lost between the hosts') AS lost,
                   count(*) FILTER (WHERE outcome = 'dropped by the sender') AS dropped_sender,
                   count(*) FILTER (WHERE outcome = 'dropped by the receiver')
                       AS dropped_receiver,
                   count(*) FILTER (WHERE outcome = 'ambiguous') AS ambiguous,
                   count(*) FILTER (WHERE outcome = 'not covered') AS not_covered,
                   count(*) FILTER (WHERE outcome = 'not finished') AS not_finished,
                   count(*) FILTER (WHERE clock_check LIKE 'below zero, within%')
                       AS below_zero_within_error,
                   count(*) FILTER (WHERE clock_check LIKE 'below zero, beyond%')
                       AS below_zero_beyond_error,
                   max(uncertainty_ns) AS uncertainty_ns, {hops}
            FROM datagrams GROUP BY flow, sender_rec, receiver_rec
            ORDER BY sender_rec, flow, receiver_rec""")

    def lost_ranges(self) -> list[dict[str, object]]:
        """Runs of consecutive datagrams lost between the hosts, per flow and receiver: by
        PubSub sequence number where the datagrams carry one, and by time."""
        return self._dicts("""
            WITH ordered AS (
                SELECT *, row_number() OVER (PARTITION BY flow, receiver_rec
                                             ORDER BY sender_mono_ns) AS n
                FROM datagrams),
            lost AS (
                SELECT *, n - row_number() OVER (PARTITION BY flow, receiver_rec ORDER BY n)
                           AS island
                FROM ordered WHERE outcome = 'lost between the hosts')
            SELECT flow, receiver_rec, count(*) AS datagrams,
                   min(pubsub_sequence_number) AS first_sequence,
                   max(pubsub_sequence_number) AS last_sequence,
                   min(sent_at_ns) AS first_sent_at_ns, max(sent_at_ns) AS last_sent_at_ns
            FROM lost GROUP BY flow, receiver_rec, island
            ORDER BY flow, receiver_rec, first_sent_at_ns""")

    def drops(self) -> list[dict[str, object]]:
        return self._dicts("""
            SELECT flow, receiver_rec,
                   CASE WHEN outcome = 'dropped by the sender' THEN 'sender' ELSE 'receiver'
                   END AS kernel, drop_reason, drop_stage, count(*) AS datagrams
            FROM datagrams WHERE outcome LIKE 'dropped%'
            GROUP BY ALL ORDER BY flow, receiver_rec, kernel, datagrams DESC""")

    def ambiguous(self, limit: int = 20) -> list[dict[str, object]]:
        """Some of the datagrams left unjoined because their identity had several
        candidates within the window (the counts are in flows())."""
        return self._dicts(f"""
            SELECT flow, receiver_rec, sent_at_ns, sport, dport, udp_len,
                   pubsub_sequence_number, candidate_arrivals, candidate_departures
            FROM datagrams WHERE outcome = 'ambiguous' ORDER BY sent_at_ns LIMIT {limit}""")

    def unmatched_arrivals(self) -> list[dict[str, object]]:
        """Arrivals no recorded departure explains: the sender was not recorded (or not
        then), or the datagram was ambiguous."""
        return self._dicts("""
            SELECT rec AS receiver_rec, saddr, sport, daddr, dport, count(*) AS datagrams,
                   count(*) FILTER (WHERE landing IN (SELECT landing FROM links))
                       AS ambiguous
            FROM a WHERE arr_id NOT IN (SELECT arr_id FROM joined)
            GROUP BY ALL ORDER BY datagrams DESC""")
