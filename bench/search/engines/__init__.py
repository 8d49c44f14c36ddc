"""Search engines: the registry of `EngineSpec`s, filled here. Each engine module has `run(ctx)` (and, with shared
storage, `prepare(config)`) and runs its trials through `ctx.runner(...)`. Adding an engine is one module and one
`ENGINES.register` line below; engine tests are parametrized over `list_engines()`."""

from bench.search.engines.base import ENGINES, Engine, EngineSpec, list_engines
from bench.search.engines.strategies import PRUNERS, SAMPLERS, StrategySpec

ENGINES.register(EngineSpec(
    "optuna", "bench.search.engines.optuna_engine", shared_storage=True,
    options={"sampler": tuple(SAMPLERS.names()), "pruner": tuple(PRUNERS.names())},
))
ENGINES.register(EngineSpec(
    "keras-tuner", "bench.search.engines.keras_tuner_engine",
    options={"tuner": ("random", "bayesian", "hyperband")},  # the keys of keras_tuner_engine.TUNERS (a test checks)
))

__all__ = ["ENGINES", "PRUNERS", "SAMPLERS", "Engine", "EngineSpec", "StrategySpec", "list_engines"]
