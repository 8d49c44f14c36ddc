"""Benchmark: every contender (the null floor, fixed reference setups, search strategies) on the same data and
budget, one table with bootstrap intervals, a race plot and a report. Imports search and everything below it.
The configuration and contenders import nothing heavy; the runner loads on first use."""

from bench.benchmark.config import BenchmarkConfig, make_benchmark_config, weights_for
from bench.benchmark.contenders import Contender, list_contenders, select
from bench.lazy import lazy_exports, names

_HEAVY = {
    "bench.benchmark.runner": ("AllFailed", "Result", "run"),
    "bench.benchmark.report": ("table_row",),
    "bench.benchmark.compare": ("markdown", "summarize"),
}
__getattr__ = lazy_exports(__name__, _HEAVY)
__all__ = ["BenchmarkConfig", "Contender", "list_contenders", "make_benchmark_config", "select", "weights_for",
           *names(_HEAVY)]
