"""Networks: MLP torsos, critics and policy heads (see `understudy.nets.heads`)."""

from understudy.nets.critics import EnsembleQ, QNetwork
from understudy.nets.mlp import MLP

__all__ = ["MLP", "QNetwork", "EnsembleQ"]
