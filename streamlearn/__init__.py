"""streamlearn: streaming online learning on Kafka (features, online training, ONNX serving).

Everything imports as ``streamlearn.…`` (ARCHITECTURE.md draws the packages).
"""

#: The release; the one place it is written (pyproject.toml reads it, CHANGELOG.md's newest
#: entry names it: tests/unit/test_packaging.py).
__version__ = "0.2.0"
