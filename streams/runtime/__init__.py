"""streams/runtime"""
