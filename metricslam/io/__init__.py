"""metricslam.io"""
