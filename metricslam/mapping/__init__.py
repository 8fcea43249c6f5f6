"""metricslam.mapping"""
