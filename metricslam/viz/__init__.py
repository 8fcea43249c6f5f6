"""Pictures and live view of a run.

- ``run_plots.write_run_plots(rec, run_dir, gt=None, mesh=None, cloud=None)``: every PNG of a run;
- ``figures``: the translation error over time, the keyframe montage, rendered map views;
- ``trajectory.plot_trajectory_top``: the top view of the trajectory;
- ``live_view.LiveView``: the live view of a run, fed by ``Slam(on_update=view.update)``;
- ``rerun_viewer.RerunLogger``: live view in Rerun (optional extra ``metricslam[viz]``).
"""
