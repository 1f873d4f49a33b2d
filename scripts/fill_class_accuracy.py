"""Add the (non-standard) class accuracy to eval reports that lack it, from the same samples.

Samples are a function of (seed, index, settings) only, so re-sampling a report's generator with its recorded
settings gives the images it scored; this re-samples them and runs argen's classifier. Used once for rows of
results/fmnist/adaptive/ whose run could not find the classifier (its file moved while they ran).

    python scripts/fill_class_accuracy.py results/fmnist/adaptive/*.eval.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from argen.eval.classifier import class_accuracy, load_default_classifier
from argen.eval.inception import to_uint8
from argen.sampling.pipeline import GenerateConfig, Pipeline


def settings(report: dict) -> dict:
    """GenerateConfig fields of an `argen eval --model` report (schedule/adaptive from its file name)."""
    name = Path(report["config"]["out"]).name.removesuffix(".eval.json")
    extra: dict = {}
    if name.startswith("adaptive"):
        extra["adaptive"] = float(name.removeprefix("adaptive"))
    elif name.startswith("fixed") and name != "fixed31":
        extra["schedule"] = int(name.removeprefix("fixed"))
    return extra


def main() -> None:
    classifier = load_default_classifier()
    for path in map(Path, sys.argv[1:]):
        report = json.loads(path.read_text())
        if report.get("class_accuracy") is not None:
            continue
        gen = report["generator"]
        pipe = Pipeline.load(GenerateConfig(model=gen["model"], **settings(report)))
        labels = torch.arange(report["n"]) % pipe.num_classes
        images = pipe.sample(labels, seed=report["seeds"]["sample_seed"]).images
        report["class_accuracy"] = class_accuracy(classifier, to_uint8(images), labels)
        report["class_accuracy_filled_by"] = "scripts/fill_class_accuracy.py (same seeds, same samples)"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(path, report["class_accuracy"])


if __name__ == "__main__":
    main()
