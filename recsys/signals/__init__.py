"""Signals: what readers do, and what the logs say up to a moment.

- ``records``: event and impression records (plain frozen dataclasses).
- ``store``: the events store, one interface with a SQLite and a PostgreSQL backend (the sub-package's face
  opens the configured one).
- ``popularity`` (time-decayed counts per article), ``logstate`` (popularity at several half-lives, first
  sightings and co-reads folded in time order), ``activity`` (a serving process's event buffer and its
  tracker of the store), ``coreads`` ("readers also read"), ``profile`` (a reader's interests).

May import: ``recsys.types``, ``recsys.config``, ``recsys.sqlite``, ``recsys.ingest`` and
``recsys.archive.layout`` (the names of trained files). Never learning, lists or the service.
"""
