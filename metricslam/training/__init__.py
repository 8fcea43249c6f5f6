"""metricslam.training"""
