"""A dataset card's geometry: its `image_size` is the default side, an explicit size wins, a bad one is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.data import load_dataset
from bench.errors import DataError
from bench.search import make_config
from tests.test_data import make_card


@pytest.fixture
def card_at_24(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    card = Path(make_card(tmp_path))
    card.write_text(card.read_text() + "image_size: 24\n")
    return str(card)


def test_card_image_size_is_the_default_and_an_explicit_size_wins(card_at_24) -> None:
    assert load_dataset(card_at_24).x_train.shape[1:] == (24, 24, 3)
    assert load_dataset(card_at_24, image_size=16).x_train.shape[1:] == (16, 16, 3)
    assert make_config(data=card_at_24).image_size == 24
    assert make_config(data=card_at_24, image_size="16").image_size == 16
    assert make_config(data="synthetic").image_size == 64  # no card: the old default


def test_card_image_size_out_of_range_stops_with_one_line(card_at_24) -> None:
    Path(card_at_24).write_text(Path(card_at_24).read_text().replace("image_size: 24", "image_size: 4"))
    with pytest.raises(DataError, match=r"The 'image_size' parameter must be an integer between 16 and 1024\. Got 4"):
        load_dataset(card_at_24)
