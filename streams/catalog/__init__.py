"""The declarations the stream processors are built from: features and models."""
