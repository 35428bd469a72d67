"""streams/learning"""
