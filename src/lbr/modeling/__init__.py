"""The model wrapper: bottleneck tokens, pooling, decoder conditioning, save/load."""

from lbr.modeling.lbr_model import LBRModel

__all__ = ["LBRModel"]
