"""The ``facetex`` command line: thin typer commands over :mod:`stages`."""
