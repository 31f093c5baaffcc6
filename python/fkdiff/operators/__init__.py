"""Linear operators in the SVD protocol (:mod:`fkdiff.operators.base`)."""

from .base import LinearOperator
from .check import check_svd
from .dense import DenseOperator

__all__ = ["LinearOperator", "DenseOperator", "check_svd"]
