"""Coca's benchmark harness: the hot paths measured side by side with their anchors (``make bench``).

Run ``python -m bench --help`` from the repository root. Each scenario pins the system under test to
one core and the load generator, the upstream stand-ins and the private infrastructure to the other,
warms up, then alternates anchor / Coca rounds and reports the median and spread of every figure.
"""
