"""Training of the Metric3D depth networks in the canonical camera space (``metricslam train``).

data (annotation files, balanced mixing), transforms (CSTM, metric-safe augmentation), losses, small_model (the
small CPU variant), synthetic_set (multi-camera training set), distributed, checkpoint, evaluate, trainer.
"""
