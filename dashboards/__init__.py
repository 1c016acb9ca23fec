"""Grafana dashboards of the COTN delivery monitor, built as code (see ``builders``)."""
