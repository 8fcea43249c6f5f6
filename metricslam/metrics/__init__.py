"""metricslam.metrics"""
