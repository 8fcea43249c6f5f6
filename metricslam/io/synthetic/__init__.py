"""Procedural worlds rendered with ground truth: an indoor room and a street canyon (z-up world, metres).

``SyntheticSequence`` yields Frames with RGB, metric depth and T_wc poses; ``write_sequence`` writes any Sequence
in the generic folder layout; ``render`` draws a Scene from any pose with any pinhole intrinsics.
"""
from metricslam.io.synthetic.render import render
from metricslam.io.synthetic.scene import Scene
from metricslam.io.synthetic.sequence import SyntheticSequence, default_focal, write_sequence
from metricslam.io.synthetic.worlds import WORLDS, make_world

__all__ = ["WORLDS", "Scene", "SyntheticSequence", "default_focal", "make_world", "render", "write_sequence"]
