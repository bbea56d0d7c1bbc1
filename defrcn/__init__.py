"""defrcn-ms: DeFRCN few-shot object detection on MindSpore.

Importing the package does nothing heavy: builders and loaders are explicit calls.
"""
__version__ = "0.1.0"
