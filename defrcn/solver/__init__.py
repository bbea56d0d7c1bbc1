"""The optimizer (detectron2's parameter groups) and the per-step learning-rate schedule."""
