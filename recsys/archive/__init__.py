"""The archive: the index on disk and the jobs that write it.

- ``layout``: the index folder (versions/, segments/, the CURRENT pointer, atomic publish, the writer lock).
- ``segment`` (reading one), ``segment_writer`` (writing one), ``segmented`` (several as one row space:
  gathers, search across segments, id lookups), ``store`` (a segment's SQLite articles table and filter
  columns), ``ann`` (exact and FAISS IVF search), ``lexical`` (hashed term arrays), ``version`` (a version
  over its segments; the follower a serving process uses), ``replica`` (``index pull``).
- The index jobs: ``indexer`` (the facade) and its steps ``plan``, ``embed``, ``write``, ``publish``, ``merge``.

May import: ``recsys.types``, ``recsys.config``, ``recsys.sqlite``, ``recsys.embedder`` (content hashes and
texts; the model loads only when a job embeds) and ``recsys.ingest``. Never the signals, learning, lists or
service above it.
"""
