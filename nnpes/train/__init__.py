"""Training: ``nnpes.train.train(load_config(path))`` (a config, as ``nnpes train``) or
``nnpes.train.fit(model, frames, ...)`` (a model and frames, from Python): one loop for both."""

from nnpes.train.callbacks import Callback, CSVWriter, ProgressBar, RunInfo, TensorBoardWriter
from nnpes.train.config import Config, load_config
from nnpes.train.loop import fit, train
from nnpes.train.state import TrainResult, TrainState

__all__ = [
    "Config",
    "TrainResult",
    "TrainState",
    "load_config",
    "train",
    "fit",
    "Callback",
    "CSVWriter",
    "TensorBoardWriter",
    "ProgressBar",
    "RunInfo",
]
