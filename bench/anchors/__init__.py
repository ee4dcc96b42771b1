"""The anchors that are not off-the-shelf programs, each run as ``python -m bench.anchors.<name>``."""
