"""Metric maps from a run: TSDF mesh, multi-view consistent point cloud, map accuracy, headless rendering.

The entry points (all take a ``metricslam.slam.reconstruction.Reconstruction``):
- ``export.write_map(rec, run_dir, MappingConfig())``: everything a run writes (mesh.ply, mesh_points.ply,
  cloud.ply, mapping.yaml);
- ``tsdf.fuse_reconstruction(rec, TSDFConfig()) -> FusionResult(mesh, cloud, ...)``, ``tsdf.save_mesh``;
- ``cloud.consistent_cloud(rec, CloudConfig()) -> (points, colours)``;
- ``depthmaps.keyframe_depth(rec, k, KeyframeDepthConfig())``: a keyframe's depth at image resolution;
- ``measure.map_scores(points, reference)``: accuracy / completeness / F-score;
- ``render.render_mesh / render_points / overview_camera``: software rendering for pictures;
- ``oracle.oracle_reconstruction(frames, prior)``: a Reconstruction from ground-truth poses (evaluation, tests).
"""
