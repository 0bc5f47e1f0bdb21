"""Readers of input files: articles and reader events, record by record, each bad record one located problem.

- ``text``: what every reader shares (format from the extension, UTF-8 with surrogateescape, JSON Lines and
  CSV records, timestamps).
- ``articles``: article files (JSON Lines, CSV, MIND news.tsv, a folder of .txt files) -> ``Article``.
- ``events``: event files (JSON Lines, CSV, MIND behaviors.tsv) -> ``Event`` and ``Impression`` records.

May import: ``recsys.types``, ``recsys.config`` and ``recsys.signals.records``. Nothing that stores or serves.
"""
