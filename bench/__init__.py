"""inferserve's benchmarks, one tool: ``python -m bench SCENARIO [options]``
(see bench/README.md and ``python -m bench --help``)."""
