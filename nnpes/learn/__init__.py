"""Active learning: ``nnpes learn CONFIG`` (or :func:`learn` from Python).

An ensemble is trained on a few labelled frames, explores with MD at the given temperatures, and
the frames its members disagree on most (above a threshold, diverse, spread over the runs) are
labelled with a reference ASE calculator and added; the ensemble is retrained from where it was,
and the cycle repeats. Modules: ``config`` (the YAML schema), ``explore`` (MD runs),
``select`` (which frames), ``label`` (the reference calculator), ``ledger`` (the work directory,
resumable), ``loop`` (the rounds).
"""

from nnpes.learn.config import LearnConfig, load_learn_config
from nnpes.learn.loop import learn

__all__ = ["LearnConfig", "learn", "load_learn_config"]
