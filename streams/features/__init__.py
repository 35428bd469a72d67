"""streams/features"""
