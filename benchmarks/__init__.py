"""abm benchmarks: run them all with ``python -m benchmarks [--quick] [--json PATH] [--plot]``."""
