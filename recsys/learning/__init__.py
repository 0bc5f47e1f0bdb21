"""What is learned from logs: features, the training pipeline and the fitted models.

- ``features``: the one feature function used offline, by ``recsys train`` and when serving.
- ``training``: examples from logged impressions in time order, a LightGBM LambdaRank fit, time-split checks.
- ``ranker``: the learned ranker as JSON (LightGBM's text model inside; no pickle, loads without torch).
- ``trained``: the trained files of an index folder, reloaded when they change.

May import: ``recsys.types``, ``recsys.config``, ``recsys.signals``, ``recsys.archive.layout`` and
``recsys.evaluation.metrics`` (pure metric functions). Never lists, the service or the CLI.
"""
