"""Learned correspondences: the DROID-SLAM network (droid.pth compatible), correlation lookups, convex upsampling."""
from metricslam.geometry.projective import pixel_grid
from metricslam.slam.correspondence.droid.corr import CorrBlock, LocalCorr, VolumeCorr, build_corr, corr_channels
from metricslam.slam.correspondence.droid.net import DroidNet, UpdateResult, motion_features
from metricslam.slam.correspondence.droid.upsample import convex_upsample, upsample_field
from metricslam.slam.correspondence.droid.weights import load_droid_weights

__all__ = [
    "CorrBlock",
    "DroidNet",
    "LocalCorr",
    "UpdateResult",
    "VolumeCorr",
    "build_corr",
    "convex_upsample",
    "corr_channels",
    "load_droid_weights",
    "motion_features",
    "pixel_grid",
    "upsample_field",
]
