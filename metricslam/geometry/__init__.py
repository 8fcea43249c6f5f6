"""metricslam.geometry"""
