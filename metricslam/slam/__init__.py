"""metricslam.slam"""
