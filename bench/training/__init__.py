"""Training: the input pipeline, the one fit-and-score function for every trial, reference and contender, and the
frozen-prefix feature cache. Imports data, models and metrics."""

from bench.training.cost import CostCeiling, OverCostCeiling, flops_per_image
from bench.training.features import CACHE, FeatureCache, route, split
from bench.training.fit import EpochHook, FitResult, TrialDiverged, fit_and_score, make_optimizer
from bench.training.pipeline import batches, predict_proba, start_trial
from bench.training.subset import subset_size, subset_words, train_subset

__all__ = ["CACHE", "CostCeiling", "EpochHook", "FeatureCache", "FitResult", "OverCostCeiling", "TrialDiverged",
           "batches", "fit_and_score", "flops_per_image", "make_optimizer", "predict_proba", "route", "split", "start_trial",
           "subset_size", "subset_words", "train_subset"]
