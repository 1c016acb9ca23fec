"""``python -m bench [--quick] [--only NAME ...] [--runs N]``: run the figures, print the
table, write ``bench/results/bench-<time>.json``."""

from bench.cli import main

raise SystemExit(main())
