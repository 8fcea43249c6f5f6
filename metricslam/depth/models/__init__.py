"""metricslam.depth.models"""
