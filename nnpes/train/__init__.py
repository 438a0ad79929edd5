"""Config-driven training: ``nnpes.train.train(load_config(path))``."""

from nnpes.train.config import Config, load_config
from nnpes.train.loop import TrainResult, train

__all__ = ["Config", "TrainResult", "load_config", "train"]
