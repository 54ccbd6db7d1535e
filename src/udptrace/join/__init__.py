"""`udptrace join`: recordings made on several hosts (or namespaces) set beside each other.

Each sent datagram is matched to its arrivals in the other recordings by an identity
both kernels compute alike (the fingerprint and the PubSub header's ids and sequence
numbers), and its path is split into hops: the sender's app and stack, the wire (left
the sender's device until it reached the receiver's driver), the receiver's stack and
its reader. The hosts' clocks are set beside each other from what each recording
states about its time (trace/timebase.py), and from the traffic itself where it flows
both ways.

  recordings.py  the recordings as departures and arrivals, each with its host's clock
  clocks.py      how far each pair of hosts' clocks can be trusted, and the offset used
  engine.py      the matching and every figure of the report, as DuckDB queries
  terminal.py, html.py, perfetto.py, files.py   the outputs
"""
