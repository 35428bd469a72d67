"""streams/state"""
