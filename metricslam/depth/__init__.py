"""metricslam.depth"""
