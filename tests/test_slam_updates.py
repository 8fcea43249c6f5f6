"""Slam's update callback: one plain-data update per frame, each keyframe sent once, as the map holds it."""
import numpy as np
import pytest

from metricslam.config import load_config
from metricslam.geometry import se3
from metricslam.io.synthetic import SyntheticSequence
from metricslam.slam.config import SlamConfig
from metricslam.slam.system import Slam
from metricslam.slam.updates import SlamUpdate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_frame_is_reported_with_its_pose_and_new_keyframes():
    seq = SyntheticSequence("room", frames=24, width=128, height=96, seed=2)
    updates: list[SlamUpdate] = []
    slam = Slam(load_config(SlamConfig, overrides=["prior.kind=simulated", "tracking.filter_thresh=2", "frontend.keyframe_thresh=2"]),
                on_update=updates.append)
    for i in range(len(seq)):
        slam.track(seq[i])
        last = updates[-1]
        assert last.frame.index == i
        assert np.allclose(last.pose_wc, se3.inverse(slam.records[-1].pose_cw(slam.store)).cpu().numpy())
        assert last.keyframe_uids == tuple(int(u) for u in slam.store.uid.tolist())
    assert len(updates) == len(seq)
    sent = [kf.uid for u in updates for kf in u.new_keyframes]
    assert len(sent) == len(set(sent)) and set(updates[-1].keyframe_uids) <= set(sent)
    assert len(updates[-1].keyframe_uids) > 3
    first = updates[0].new_keyframes[0]
    assert first.frame_index == 0 and np.allclose(first.pose_wc, np.eye(4))
    assert first.depth.shape == first.confidence.shape == (96 // 8, 128 // 8) and (first.depth > 0).all()
    assert first.image.shape == (96, 128, 3)
