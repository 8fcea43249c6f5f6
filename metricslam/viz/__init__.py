"""metricslam.viz"""
