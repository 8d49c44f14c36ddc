"""What the best model sees, on the test split: a Grad-CAM gallery, a gallery of its most confident mistakes and a
reliability diagram with the expected calibration error (ECE), each as a PNG (matplotlib) and an HTML twin (plotly);
where the test split has source groups, `test_groups.csv`: its mistakes by source group (bench.metrics.group_losses).

Grad-CAM (Selvaraju et al., 2017): for the last convolutional feature map A (H'×W'×K), the weight of channel k is the
spatial mean of d y_class / d A_k, where y_class is the class score BEFORE the softmax (the logit); the map is
ReLU(Σ_k w_k A_k), scaled to 0..1 per image and resized to the image. The gradient of the softmax probability would
be p(1 - p) times smaller and is exactly 0 in float32 once p rounds to 1, which blanks the maps of the confident
predictions. Our models end in `Dense(n, activation="softmax", name="probabilities")`: the logits are that layer's
input times its kernel plus its bias, computed beside the model; the served model is not changed.
"The last convolutional feature map" is found generically: the last layer of the model's own graph whose output is
4-D, which is the last conv block of the scratch CNN and the whole backbone (a nested keras.applications model) of
the backbone family.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import tensorflow as tf  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

import pandas as pd  # noqa: E402

from bench import tracking  # noqa: E402
from bench.data import Dataset  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.metrics import expected_calibration_error, group_losses, reliability_bins  # noqa: E402
from bench.reporting.plots import write_html  # noqa: E402

ARTIFACT_DIR = "insight"
HEAT_ALPHA = 0.6


# --- Grad-CAM ---


def _graph_output(layer: keras.layers.Layer) -> Any:
    # A nested model's `.output` is its own graph's tensor; the tensor of its call in the outer graph is the output
    # of its last inbound node (the same as `.output` for an ordinary layer).
    return layer._inbound_nodes[-1].output_tensors[0]


def feature_layer(model: keras.Model) -> keras.layers.Layer:
    """The last layer of `model`'s graph with a 4-D (N, H, W, C) output, preferring maps larger than 1×1.
    Only layers from the first one with weights on count: the input, augmentation and rescaling are not features."""
    layers = [layer for layer in model.layers if layer._inbound_nodes]
    first = next((i for i, layer in enumerate(layers) if layer.weights), len(layers))
    maps = [layer for layer in layers[first:] if len(_graph_output(layer).shape) == 4]
    if not maps:
        raise BenchError(f"model '{model.name}' has no 4-D feature map for Grad-CAM")
    spatial = [layer for layer in maps if (_graph_output(layer).shape[1] or 0) * (_graph_output(layer).shape[2] or 0) > 1]
    return (spatial or maps)[-1]


def _graph_input(layer: keras.layers.Layer) -> Any:
    return layer._inbound_nodes[-1].input_tensors[0]


def score_head(model: keras.Model) -> tuple[keras.layers.Layer, keras.layers.Dense]:
    """(the model's last layer, the Dense that ends the model): the last layer itself, or the last layer of a nested
    head model (the backbone family's `head`). The Dense's pre-activation (input @ kernel + bias) are the logits."""
    last = model.layers[-1]
    dense = last.layers[-1] if isinstance(last, keras.Model) else last
    if not isinstance(dense, keras.layers.Dense):
        raise BenchError(f"model '{model.name}' does not end in a Dense layer: no class scores before the softmax "
                         "for Grad-CAM")
    return last, dense


def grad_cam(model: keras.Model, images: np.ndarray, classes: np.ndarray | None = None, *,
             layer: keras.layers.Layer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(heat maps N×S×S in 0..1 at the image size, probabilities N×C) for uint8 images N×S×S×3.
    `classes`: whose evidence each map shows (default: the predicted class); the score is its logit."""
    layer = layer or feature_layer(model)
    last, dense = score_head(model)
    cam_model = keras.Model(model.inputs[0], [_graph_output(layer), _graph_input(last)])
    # Inside a nested head: its layers up to the Dense, applied to the same forward pass (so the tape sees them).
    to_dense = None if last is dense else keras.Model(last.inputs[0], _graph_input(dense))
    x = tf.convert_to_tensor(np.asarray(images), tf.float32)
    with tf.GradientTape() as tape:
        features, head_input = cam_model(x, training=False)  # training=None would run the augmentation layers
        if to_dense is not None:
            head_input = to_dense(head_input, training=False)
        logits = tf.matmul(tf.cast(head_input, dense.kernel.dtype), dense.kernel)
        logits = logits + dense.bias if dense.use_bias else logits
        prob = dense.activation(logits)  # the model's own output
        target = tf.argmax(prob, axis=1) if classes is None else tf.convert_to_tensor(classes, tf.int64)
        score = tf.gather(logits, target, axis=1, batch_dims=1)
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
    cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0), np.asarray(prob)


def overlay(image: np.ndarray, heat: np.ndarray | None, *, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """uint8 RGB: the image with the heat map (jet colours) blended over it, more opaque where the map is hotter,
    so the cell stays visible where the model does not look."""
    if heat is None:
        return np.asarray(image, np.uint8)
    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255
    weight = alpha * (0.35 + 0.65 * heat)[..., None]
    return np.clip((1 - weight) * image + weight * colours, 0, 255).astype(np.uint8)


# --- which images ---


def gallery_indices(y_true: np.ndarray, n: int) -> np.ndarray:
    """Up to `n` test images, taken round-robin over the classes (first images of each), so every class shows."""
    by_class = [list(np.flatnonzero(y_true == c)) for c in np.unique(y_true)]
    picked: list[int] = []
    while len(picked) < n and any(by_class):
        for members in by_class:
            if members and len(picked) < n:
                picked.append(members.pop(0))
    return np.array(picked, dtype=int)


def confident_mistakes(y_true: np.ndarray, prob: np.ndarray, n: int) -> np.ndarray:
    """Indices of the wrong predictions with the highest confidence, most confident first."""
    pred = prob.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    return wrong[np.argsort(-prob[wrong].max(axis=1), kind="stable")][:n]


# --- galleries ---


def _titles(y_true: np.ndarray, prob: np.ndarray, idx: np.ndarray, class_names: list[str]) -> list[tuple[str, bool]]:
    pred = prob[idx].argmax(axis=1)
    return [(f"true {class_names[t]}\npred {class_names[p]} {prob[i, p]:.2f}", bool(t == p))
            for i, t, p in zip(idx, y_true[idx], pred)]


def gallery_png(tiles: list[np.ndarray], titles: list[tuple[str, bool]], path: Path, title: str, *, cols: int = 4,
                tile: int = 136, band: int = 30, dpi: int = 100) -> None:
    """One mosaic image on one axes, titles as text: a tenth of the time of a grid of subplots."""
    from PIL import Image

    rows = max(1, -(-len(tiles) // cols))
    gap, head = 8, 40
    height, width = head + rows * (band + tile + gap), cols * (tile + gap) + gap
    mosaic = np.full((height, width, 3), 255, np.uint8)
    spots = []
    for i, image in enumerate(tiles):
        top, left = head + (i // cols) * (band + tile + gap) + band, gap + (i % cols) * (tile + gap)
        mosaic[top : top + tile, left : left + tile] = np.asarray(Image.fromarray(image).resize((tile, tile), Image.BILINEAR))
        spots.append((left + tile / 2, top - 2))
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="none")
    ax.axis("off")
    ax.text(width / 2, 4, title, ha="center", va="top", fontsize=8.5)
    for (x, y), (text, right) in zip(spots, titles):
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7, linespacing=1.1,
                color="darkgreen" if right else "firebrick")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def gallery_figure(tiles: list[np.ndarray], titles: list[tuple[str, bool]], title: str, *, cols: int = 4) -> go.Figure:
    rows = max(1, -(-len(tiles) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t.replace("\n", "<br>") for t, _ in titles],
                        horizontal_spacing=0.02, vertical_spacing=0.08)
    for i, tile in enumerate(tiles):
        fig.add_trace(go.Image(z=tile, hoverinfo="skip"), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=10)
    fig.update_layout(title=title.replace("\n", "<br>"), height=230 * rows + 80, width=210 * cols, margin={"l": 10, "r": 10, "t": 90, "b": 10})
    return fig


# --- calibration ---


def reliability_png(bins: pd.DataFrame, ece: float, path: Path, title: str) -> None:
    width = 1 / len(bins["count"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    filled = bins["count"] > 0
    left = bins["lower"][filled]
    top.bar(left, bins["accuracy"][filled], width=width, align="edge", color="steelblue", edgecolor="black", label="accuracy")
    # The gap is an unfilled hatched box between accuracy and confidence, so it never hides the accuracy bar.
    top.bar(left, bins["confidence"][filled] - bins["accuracy"][filled], bottom=bins["accuracy"][filled], width=width,
            align="edge", fill=False, edgecolor="firebrick", hatch="//", lw=0.8, label="gap to confidence")
    top.plot(left + width / 2, bins["confidence"][filled], "D", color="firebrick", ms=4, label="mean confidence")
    top.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    top.set(ylabel="accuracy", ylim=(0, 1), xlim=(0, 1), title=f"{title}\nECE {ece:.4f} ({len(bins['count'])} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(bins["lower"], bins["count"], width=width, align="edge", color="grey", edgecolor="black")
    bottom.set(xlabel="confidence (top-class probability)", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def reliability_figure(bins: pd.DataFrame, ece: float, title: str) -> go.Figure:
    width = 1 / len(bins["count"])
    centres = bins["lower"] + width / 2
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.06)
    hover = [f"confidence {lo:.2f}-{lo + width:.2f}<br>{n} images<br>accuracy {a:.3f}<br>mean confidence {c:.3f}"
             for lo, n, a, c in zip(bins["lower"], bins["count"], bins["accuracy"], bins["confidence"])]
    fig.add_trace(go.Bar(x=centres, y=bins["accuracy"], width=width, name="accuracy", hovertext=hover,
                         hoverinfo="text", marker_color="steelblue"), row=1, col=1)
    fig.add_trace(go.Scatter(x=centres, y=bins["confidence"], mode="markers", name="mean confidence",
                             marker={"color": "firebrick", "symbol": "diamond"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"},
                             name="perfect calibration"), row=1, col=1)
    fig.add_trace(go.Bar(x=centres, y=bins["count"], width=width, name="images", marker_color="grey",
                         hovertext=hover, hoverinfo="text"), row=2, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="images", row=2, col=1)
    fig.update_xaxes(title_text="confidence (top-class probability)", range=[0, 1], row=2, col=1)
    fig.update_layout(title=f"{title}: ECE {ece:.4f}", height=650, width=700)
    return fig


# --- all of it, to a folder and to a run ---


def write_insights(folder: Path, model: keras.Model, images: np.ndarray, y_true: np.ndarray, prob: np.ndarray,
                   class_names: list[str], *, n_images: int = 16, title: str = "best model, test split") -> dict[str, float]:
    """gradcam.png/.html, mistakes.png/.html, reliability.png/.html in `folder`; returns {"ece": …, "n_mistakes": …}.
    A model without a 4-D feature map or a final Dense layer gets its galleries without heat maps."""
    y_true = np.asarray(y_true)
    shown = gallery_indices(y_true, n_images)
    wrong = confident_mistakes(y_true, prob, n_images)
    try:
        layer = feature_layer(model)
        score_head(model)
    except BenchError:
        layer = None
    for name, idx, what in (("gradcam", shown, "Grad-CAM of the predicted class"),
                            ("mistakes", wrong, "most confident mistakes, Grad-CAM of the predicted class")):
        if len(idx) == 0:
            continue
        heat = grad_cam(model, images[idx], prob[idx].argmax(axis=1), layer=layer)[0] if layer else [None] * len(idx)
        tiles = [overlay(images[i], h) for i, h in zip(idx, heat)]
        titles = _titles(y_true, prob, idx, class_names)
        heading = f"{title}: {what}\n" + (f"(feature map: layer {layer.name}; gradient of the class logit)" if layer
                                             else "(no conv feature map or final Dense layer)")
        gallery_png(tiles, titles, folder / f"{name}.png", heading)
        write_html(gallery_figure(tiles, titles, heading), folder / f"{name}.html")
    ece = expected_calibration_error(y_true, prob)
    bins = reliability_bins(y_true, prob)
    reliability_png(bins, ece, folder / "reliability.png", f"reliability, {title}")
    write_html(reliability_figure(bins, ece, f"reliability, {title}"), folder / "reliability.html")
    return {"ece": ece, "n_mistakes": float((prob.argmax(axis=1) != y_true).sum())}


def log_insights(c: MlflowClient, run_id: str, model: keras.Model, dataset: Dataset, prob: np.ndarray, *,
                 n_images: int = 16) -> dict[str, float]:
    """The galleries and the reliability diagram of the test split (and, with test groups, the mistakes by source
    group) as artifacts `insight/*` of `run_id`, and `test_ece` as its metric."""
    started = time.perf_counter()
    out: dict[str, float] = {}
    groups = getattr(dataset, "groups_test", None)
    lost = (group_losses(dataset.y_test, prob.argmax(axis=1), groups, list(dataset.class_names))
            if groups is not None else None)

    def write(folder: Path) -> None:
        out.update(write_insights(folder, model, dataset.x_test, dataset.y_test, prob, list(dataset.class_names),
                                  n_images=n_images))
        if lost is not None:
            lost.to_csv(folder / "test_groups.csv", index=False)

    tracking.log_files(c, run_id, write, artifact_path=ARTIFACT_DIR)
    tracking.log_batch(c, run_id, metrics={"test_ece": out["ece"]})
    worst = ""
    if lost is not None and lost.loc[0, "points_lost"] > 0:
        w = lost.loc[0]
        worst = (f"; the costliest source group, {w['class']} {w['group']} ({w['images']} images, accuracy "
                 f"{w['accuracy']:.3f}), costs {100 * w['points_lost']:.1f} accuracy points (mostly called "
                 f"{w['most_predicted']})")
    print(f"insight: Grad-CAM gallery, {int(out['n_mistakes'])} test mistakes, reliability (test ECE {out['ece']:.4f}) "
          f"logged to {ARTIFACT_DIR}/ in {time.perf_counter() - started:.1f}s{worst}", flush=True)
    return {"test_ece": out["ece"]}
