"""The commands about trained models: ``export`` (a study's best trial, or each point of its Pareto
front, as a trained model), ``evaluate`` (an exported model's accuracy) and ``predict`` (its top
classes of images). Export and evaluate say their phases on stderr as they go; the answer is on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import ConfigError
from .flags import add_store_flags, output_folder, positive, tracking_uri
from .render import accuracy_table, human, say


def add_export(commands: argparse._SubParsersAction) -> None:
    """The ``export`` command and its flags."""
    from ..export import FORMATS

    export = commands.add_parser("export", help="export a study's best architecture as a trained model")
    export.add_argument("study", help="study name")
    export.add_argument("--top", type=positive, default=1, help="re-evaluate the top K trials (default 1)")
    export.add_argument("--seeds", type=positive, default=1, help="seeds per re-evaluated trial (default 1)")
    export.add_argument("--retrain-epochs", type=int, help="epochs on train+val (default: the study's); 0 reuses the trial's checkpoint")
    export.add_argument("--out", help="output folder (default ./exports/STUDY)")
    export.add_argument("--formats", default=",".join(FORMATS), help=f"any of {','.join(FORMATS)} (default all)")
    export.add_argument("--dataset", help="the study's data set, if it moved (e.g. imagefolder:PATH)")
    export.add_argument("--cache-dir", help="where decoded data sets are cached")
    export.add_argument("--data-dir", help="where torchvision's CIFAR files are")
    export.add_argument("--device", default="cpu", help="device for re-evaluation and retraining")
    export.add_argument("--force", action="store_true",
                        help="write over a non-empty --out folder, and export a best trial that sat at chance level all the same")
    export.add_argument("--where", action="append", default=[],
                        help="only trials whose metric meets METRIC<=VALUE (or <, >, >=, =, !=), e.g. macs<=50M, latency_ms<=2; repeatable")
    export.add_argument("--pareto", action="store_true", help="export every point of the study's Pareto front, each into OUT/TRIAL/")
    add_store_flags(export)
    export.set_defaults(run=_export)


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` command and its flags."""
    from ..export import PRECISIONS, SPLITS

    evaluate = commands.add_parser("evaluate", help="accuracy of an exported model")
    evaluate.add_argument("folder", help="export folder")
    evaluate.add_argument("--dataset", help="data set (default: the one it was exported with)")
    evaluate.add_argument("--split", choices=SPLITS, default=SPLITS[0],
                          help="test (default: images no training or search saw), the export's validation split, or every image")
    evaluate.add_argument("--precision", choices=PRECISIONS,
                          help="compute in this precision (default: the one the model trained in where this CPU has it, else fp32)")
    evaluate.add_argument("--cache-dir")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=_evaluate)


def add_predict(commands: argparse._SubParsersAction) -> None:
    """The ``predict`` command and its flags."""
    predict = commands.add_parser("predict", help="top classes of images under an exported model")
    predict.add_argument("folder", help="export folder")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--top", type=positive, default=3)
    predict.set_defaults(run=_predict)


def _export(args: argparse.Namespace) -> None:
    from ..export import export_front, export_study

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    out = output_folder(args.out or Path("exports") / args.study, args.force)
    common = dict(retrain_epochs=args.retrain_epochs, formats=formats, tracking_uri=tracking_uri(args), experiment=args.experiment,
                  dataset=args.dataset, cache_dir=args.cache_dir, data_dir=args.data_dir, device=args.device, force=args.force, say=say)
    if args.pareto:
        if args.where or args.top > 1:
            raise ConfigError("--pareto exports every point of the front; --where and --top pick one trial: give one or the other")
        for meta in export_front(args.study, out, seeds=args.seeds, **common):
            _describe_export(meta, out / meta["trial"])
        return
    _describe_export(export_study(args.study, out, top=args.top, seeds=args.seeds, where=args.where, **common), out)


def _describe_export(meta: dict[str, object], out: Path) -> None:
    trained, accuracies = meta["trained_on"], meta["accuracies"]
    print(f"{meta['name']} from study {meta['study']} -> {out}/ ({', '.join(meta['formats'])}); "
          f"{human(meta['params'])} params, {human(meta['macs'])} MACs")
    print(f"  trained on {' + '.join(trained['splits'])} ({trained['images']:,} images, {trained['epochs']} epochs, {trained['how']})")
    print(accuracy_table([accuracies[key] for key in ("test", "test_fp32", "val", "search") if key in accuracies]))
    if "registered_model" in meta:
        print(f"  MLflow: {meta['registered_model']['uri']} (version {meta['registered_model']['version']})")


def _evaluate(args: argparse.Namespace) -> None:
    from ..export import evaluate

    result = evaluate(args.folder, args.dataset, split=args.split, precision=args.precision, cache_dir=args.cache_dir,
                      data_dir=args.data_dir, say=say)
    if args.json:
        print(json.dumps(result))
        return
    recorded = "" if result["recorded"] is None else f"; recorded at export: {result['recorded']:.2%}"
    print(f"{args.folder} on {result['dataset']}{recorded}")
    print(accuracy_table([result | {"of": "the exported model"}]))


def _predict(args: argparse.Namespace) -> None:
    from ..export import predict

    for path, classes in zip(args.images, predict(args.folder, args.images, top=args.top)):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in classes))
