"""Search: the configuration, YAML search spaces, the engines (Optuna, KerasTuner) and everything around a study:
the trial runner, progress, worker processes, and the finish (leaderboard, test evaluation, registry).

`run(config)` is the entry point. The configuration and spaces import nothing heavy, so the command line validates
parameters before TensorFlow loads; the rest loads on first use.
"""

from bench.lazy import lazy_exports, names
from bench.search.config import SearchConfig, make_config
from bench.search.engines import ENGINES, EngineSpec, list_engines
from bench.search.space import Space, defaults, list_spaces, load_space

_HEAVY = {
    "bench.search.study": ("run",),
    "bench.search.context": ("SearchContext", "SearchResult"),
    "bench.search.trial": ("TrialOutcome", "TrialRunner"),
}
__getattr__ = lazy_exports(__name__, _HEAVY)
__all__ = ["ENGINES", "EngineSpec", "SearchConfig", "Space", "defaults", "list_engines", "list_spaces", "load_space",
           "make_config", *names(_HEAVY)]
