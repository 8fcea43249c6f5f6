"""metricslam: metric 3D reconstruction from one ordinary camera.

Metric3D depth priors feed a DROID-style dense bundle adjustment, so trajectories and maps come out in metres.
CPU first, CUDA when present.
"""
__version__ = "0.1.0"
