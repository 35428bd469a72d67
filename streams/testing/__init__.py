"""streams/testing"""
