"""The ``evaluate`` stage: metrics over facetex result folders (:mod:`stages.evaluate.metrics`)."""
