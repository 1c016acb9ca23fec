"""``python -m bench`` (``make bench``): throughput and latency against bare baselines.

Not part of ``make test``: nothing here asserts a timing. See ``bench/__main__.py``.
"""
