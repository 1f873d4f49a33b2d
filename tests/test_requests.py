"""The request checks every front end shares (argen.sampling.requests): page and JSON numbers, id lists."""

from __future__ import annotations

import pytest

from argen.sampling.pipeline import GenerateConfig
from argen.sampling.requests import ExtendRequest, SampleRequest, parse_ids, whole

GEN = GenerateConfig(model="ear_fmnist")


def test_whole_takes_page_and_json_numbers_only() -> None:
    assert (whole(3, "n"), whole(3.0, "n"), whole(-2, "seed", lo=None)) == (3, 3, -2)
    for bad in (2.5, float("nan"), float("inf"), "3", True, None, -1):
        with pytest.raises(ValueError, match="n must be a whole number >= 0, got"):
            whole(bad, "n")


def test_sample_request_orders_images_class_major() -> None:
    request = SampleRequest(GEN, classes=[3, 7], per_class=2.0)
    assert request.per_class == 2 and request.labels(10) == [3, 3, 7, 7]
    assert SampleRequest(GEN).labels(3) == [0, 1, 2]  # no classes given: every class
    with pytest.raises(ValueError, match="images per class must be a whole number >= 1, got 0"):
        SampleRequest(GEN, per_class=0)
    with pytest.raises(ValueError, match="classes: give one or more whole numbers"):
        SampleRequest(GEN, classes=[])


def test_extend_request_checks_what_only_it_has() -> None:
    assert ExtendRequest(GEN, centre=6.0, canvas=20.0).centre == 6
    with pytest.raises(ValueError, match=r"the kept centre \(tokens\) must be a whole number >= 1, got 0"):
        ExtendRequest(GEN, centre=0)
    with pytest.raises(ValueError, match="give one class per image"):
        ExtendRequest(GEN, images=[0, 1], classes=[3])
    assert parse_ids(" 0, 3,7", "classes") == [0, 3, 7] and parse_ids("", "classes") is None
    with pytest.raises(
        ValueError, match=r"images: give comma-separated whole numbers such as 0,3,7 \(got 'a'\)"
    ):
        parse_ids("a", "images")
