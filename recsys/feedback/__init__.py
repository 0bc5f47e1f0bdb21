"""Closing the loop: every list served is recorded, clicks name the list and position they came from, and the
online figures are read back from both.

``log`` (the served-list log: list ids, the batching writer) and ``report`` (lists, clicks, CTR with
intervals per box / variant / day). May import recsys.types, recsys.config and recsys.signals (the events
store owns the tables); recsys.service and the CLI/HTTP layers use it.
"""
