from lib.activelearning.least_sure import LeastSure

__all__ = ["LeastSure"]
