"""metricslam.slam.correspondence"""
