"""What does one recipe change do on real data? A space's defaults (`--space`, scratch_cnn unless given), with
`--set name=value` changes, trained as a trial is (train alone, best epoch kept on validation) on the Kaggle blood
cells at the card's geometry, for each `--seeds` seed; the official TEST is read once per fit, after the choice.
`--carve-seed` draws another grouped validation carve from train (how much the estimate moves with the carve), and
`--save DIR` keeps each fit's probabilities for benchmarks/compare_fits.py. Per fit: the validation macro-F1 after every
epoch (how steady the end of training is), the kept epoch, test accuracy and macro-F1, the test's costliest source
groups (bench.metrics.group_losses) and the seconds. Without `--set` it measures the defaults themselves.

`--folds K` bags instead (AutoGluon's k-fold bagging): train + validation are cut into K grouped, class-stratified
folds (seeded by `--carve-seed`); fold i's fit (training seed `seed + i`) trains on the other K - 1 folds and keeps
its best epoch on fold i. Every training source then teaches K - 1 of the K fits, and each is scored once out of
fold: the out-of-fold macro-F1 over all train + validation sources is the estimate, and test is read once, on the
mean of the K fits' probabilities.

    python benchmarks/recipe_kaggle.py --set ema_momentum=0.99 --seeds 0,1
    python benchmarks/recipe_kaggle.py --folds 5 --seeds 0
    python benchmarks/recipe_kaggle.py --space mobilenet_v2 --image-size 128 \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="datasets/blood_cells_kaggle.yaml")
    parser.add_argument("--space", default="scratch_cnn", help="a search space; its defaults are the recipe")
    parser.add_argument("--weights", default="imagenet", help="pretrained spaces: imagenet or a weights file")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change one parameter of the space's defaults (YAML value); repeatable")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=None, help="decoded side in px (default: the card's)")
    parser.add_argument("--carve-seed", type=int, default=0,
                        help="seed of the grouped validation carve from train (the search's --seed carves the same)")
    parser.add_argument("--save", default="", metavar="DIR",
                        help="write each fit's validation and test probabilities to DIR/seed<N>.npz (to compare or "
                             "ensemble fits afterwards without retraining)")
    parser.add_argument("--folds", type=int, default=0,
                        help="K >= 2: bag K fits over grouped folds of train + validation (see the docstring)")
    args = parser.parse_args()

    from sklearn.metrics import f1_score

    from bench.data import load_dataset
    from bench.metrics import group_losses
    from bench.search.space import defaults, load_space
    from bench.training import fit_and_score, predict_proba, start_trial

    changes = {name: yaml.safe_load(value) for name, value in (item.split("=", 1) for item in args.set)}
    space = load_space(args.space)
    params = {**defaults(space), **changes}
    ds = load_dataset(args.data, image_size=args.image_size, seed=args.carve_seed)
    print(f"{ds.x_train.shape[1]} px, carve seed {args.carve_seed}; train {len(ds.y_train)}, validation {len(ds.y_val)}, test {len(ds.y_test)}; changes {changes or 'none'}",
          flush=True)
    if args.folds:
        for seed in (int(s) for s in args.seeds.split(",")):
            bag(ds, space, params, args, seed)
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        start_trial(seed)
        started = time.perf_counter()
        fit = fit_and_score(params, ds, family=space.family, epochs=args.epochs, seed=seed, weights=args.weights)
        seconds = time.perf_counter() - started
        proba = predict_proba(fit.model, ds.x_test)
        pred = proba.argmax(axis=1)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(Path(args.save) / f"seed{seed}.npz", val=fit.val_prob, test=proba, y_val=ds.y_val,
                                y_test=ds.y_test, groups_test=ds.groups_test, classes=np.asarray(ds.class_names),
                                splits_fingerprint=ds.splits_fingerprint,
                                best_epoch=fit.best_epoch, seconds=seconds)
        trace = [round(row["val_f1_macro"], 3) for row in fit.history]
        print(f"seed {seed}: val_f1_macro after each epoch {trace}; kept epoch {fit.best_epoch} "
              f"({fit.best_value:.3f}); test accuracy {(pred == ds.y_test).mean():.3f}, macro-F1 "
              f"{f1_score(ds.y_test, pred, average='macro'):.3f}; {seconds:.0f} s", flush=True)
        if ds.groups_test is not None:
            print(group_losses(ds.y_test, pred, ds.groups_test, ds.class_names).head(3).to_string(), flush=True)


def bag(ds, space, params: dict, args, seed: int) -> None:
    """K fits over grouped folds of train + validation: out-of-fold validation, test on their mean (the docstring)."""
    from dataclasses import replace

    from sklearn.metrics import f1_score

    from bench.metrics import group_losses
    from bench.training import fit_and_score, predict_proba, start_trial

    from bench.search.bag import folds, pooled

    (y, groups), x = pooled(ds), np.concatenate([ds.x_train, ds.x_val])
    cuts = folds(ds, args.folds, args.carve_seed)  # the folds a search's bag_folds cuts with --seed = carve seed
    oof, tests = np.zeros((len(y), len(ds.class_names))), []
    for i, (train, held) in enumerate(cuts):
        start_trial(seed + i)
        started = time.perf_counter()
        part = replace(ds, x_train=x[train], y_train=y[train], x_val=x[held], y_val=y[held],
                       fingerprint=f"{ds.fingerprint}+fold{i}of{args.folds}")
        fit = fit_and_score(params, part, family=space.family, epochs=args.epochs, seed=seed + i, weights=args.weights)
        oof[held], proba = fit.val_prob, predict_proba(fit.model, ds.x_test)
        tests.append(proba)
        monocytes = sorted(set(groups[held][y[held] == ds.class_names.index("MONOCYTE")])) \
            if "MONOCYTE" in ds.class_names else []
        print(f"fold {i} (seed {seed + i}): {len(held)} held-out images of {len(set(groups[held]))} groups"
              + (f" (monocytes {', '.join(monocytes)})" if monocytes else "")
              + f"; kept epoch {fit.best_epoch} ({fit.best_value:.3f}); test accuracy "
              f"{(proba.argmax(axis=1) == ds.y_test).mean():.3f}; {time.perf_counter() - started:.0f} s", flush=True)
    mean = np.mean(tests, axis=0).argmax(axis=1)
    print(f"bag of {args.folds}, seed {seed}: out-of-fold macro-F1 {f1_score(y, oof.argmax(axis=1), average='macro'):.3f} "
          f"over {len(y)} train + validation images; test accuracy {(mean == ds.y_test).mean():.3f}, macro-F1 "
          f"{f1_score(ds.y_test, mean, average='macro'):.3f}", flush=True)
    if ds.groups_test is not None:
        print(group_losses(ds.y_test, mean, ds.groups_test, ds.class_names).head(6).to_string(), flush=True)
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(args.save) / f"bag{args.folds}-seed{seed}.npz", test=np.mean(tests, axis=0),
                            y_test=ds.y_test, groups_test=ds.groups_test, classes=np.asarray(ds.class_names),
                            oof=oof, y_trainval=y, splits_fingerprint=ds.splits_fingerprint)


if __name__ == "__main__":
    main()
