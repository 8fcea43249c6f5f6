"""metricslam.io.synthetic"""
