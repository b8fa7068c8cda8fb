"""The ``facetex`` command line: thin typer commands over :mod:`stages`."""

import os
import warnings

# Quiet the native libraries (MediaPipe / TFLite / glog) before anything imports them.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")
