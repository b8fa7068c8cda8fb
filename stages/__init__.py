"""facetex stages: the library behind the `facetex` command.

Each stage is a plain function over typed artifacts (small dataclasses with ``load``/``save``):

- :mod:`stages.fit`      photo -> :class:`stages.fit.FitResult` (``fit.json``)
- :mod:`stages.unwrap`   photo + fit -> :class:`stages.unwrap.UnwrapResult` (``uv_texture.png`` ...)
- :mod:`stages.complete` unwrap -> complete UV texture, through a registry of fill methods
- :mod:`stages.render`   texture + fit -> renders, turntable, OBJ/MTL/GLB export

Shared pieces live in :mod:`stages.core` (face model, camera, rasterizer, shading, image io).
"""

__version__ = "0.1.0"
