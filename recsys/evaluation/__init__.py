"""Offline evaluation: metric functions and the evaluators that score recsys on labelled data.

``metrics`` holds plain, separately tested metric functions and imports nothing of recsys (the learning
package uses them to validate a model). The evaluators (``related``, ``recommend``, ``impressions``) and
``report`` sit on top: they may import anything below, the service included.
"""
