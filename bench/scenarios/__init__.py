"""The scenarios of ``python -m bench``: each module has SUMMARY (its line in
``--help``), ``add_arguments(parser)`` and ``run(args) -> dict`` (its
measurements, as JSON); bench.render turns that JSON into Markdown."""
