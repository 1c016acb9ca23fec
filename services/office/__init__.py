"""The programme office's web board: server-rendered pages over the aggregator's read API."""
