"""Builders of exact problems and reference solutions for the tests and benchmarks; the product never uses them.

- ``ba_problems``: synthetic dense-BA problems with known solutions (``BAProblem``, ``synthetic_problem``).
- ``ba_reference``: the dense-BA step solved with the full normal equations (``dense_reference_step``).
- ``oracle``: reconstructions from ground-truth poses (``oracle_reconstruction``), isolating the mapping stage.
"""
