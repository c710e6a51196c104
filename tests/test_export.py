"""`cnnsearch export`, `evaluate` and `predict`: the exported formats agree, and reload without cnnsearch's code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from cnnsearch import build_model, load_arch
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.export import Normalized, load_exported

EXPORT_PAGE = Path(__file__).parents[1] / "docs" / "export.md"

pytestmark = pytest.mark.slow  # every test here runs a study through Ray

# conftest.py's tiny space narrowed to its two widths, on 512 images.
SPACE = {"stem": {"channels": 8}, "residual": {"num_blocks": 1}, "dataset": {"subset": 512}}


@pytest.fixture(scope="module")
def study(ray_session, tmp_path_factory, tiny_space):
    from cnnsearch.cli import main

    folder = tmp_path_factory.mktemp("export")
    tiny_space(folder, **SPACE)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    main(["run", str(folder / "tiny.yaml"), "--tracking-uri", uri, "--storage", str(folder / "runs"),
          "--sampler", "grid", "--trials", "2", "--scheduler", "none", "--val-subset", "80"])
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.trial_id` != ''",
                                order_by=["metrics.val_acc DESC"])
    return folder, uri, client, trials


def test_exported_formats_agree_with_the_trained_model(study, tmp_path, cli):
    folder, uri, client, trials = study
    out = tmp_path / "export"
    status, stdout, err = cli("export", "tiny", "--retrain-epochs", "0", "--out", out, "--tracking-uri", uri)
    assert status == 0, err
    assert {p.name for p in out.iterdir()} == {"arch.yaml", "weights.pt", "model.pt2", "model.onnx", "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    best = trials[0]
    accuracies = meta["accuracies"]
    assert meta["trial_run_id"] == best.info.run_id and accuracies["search"]["accuracy"] == best.data.metrics["val_acc"]
    assert meta["params"] == best.data.metrics["params"] and meta["macs"] == best.data.metrics["macs"]
    assert meta["class_names"] == [f"class{i}" for i in range(10)] and meta["input_size"] == 32
    assert meta["trained_on"]["splits"] == ["train"] and meta["cnnsearch_version"]
    # Of synthetic's 2,000 images, 200 are the test split; of the other 1,800, 180 validate.
    # The trials validated on 80 of those; the export is measured on all 180, and on the 200 test images.
    (parent,) = client.search_runs([best.info.experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    assert parent.data.params["split.val_images"] == "80" and parent.data.params["split.val_subset"] == "80"
    assert parent.data.params["split.test_images"] == "200" and parent.data.params["split.test_fraction"] == "0.1"
    assert all(round(trial.data.metrics["val_acc"] * 80, 6).is_integer() for trial in trials)
    assert accuracies["search"]["images"] == 80 and accuracies["val"]["images"] == 180 and accuracies["test"]["images"] == 200
    assert not any(accuracy["seen_in_training"] for accuracy in accuracies.values())  # a checkpoint: it trained on train only
    test = accuracies["test"]
    assert test["interval"]["low"] < test["accuracy"] < test["interval"]["high"] and test["interval"]["method"] == "wilson"

    # The in-memory model: the trial's architecture and checkpoint, with the data's normalization.
    data = load_dataset("synthetic")
    arch = load_arch(client.download_artifacts(best.info.run_id, "arch.yaml", str(tmp_path)))
    model = build_model(arch)
    model.load_state_dict(torch.load(client.download_artifacts(best.info.run_id, "checkpoint/weights.pt", str(tmp_path)),
                                     weights_only=True))
    reference = Normalized(model, data.mean, data.std).eval()
    batch = data.images[:24].float() / 255
    with torch.no_grad():
        expected = reference(batch)
        assert expected.argmax(1).unique().numel() > 1  # a model that learned something
        program = torch.export.load(out / "model.pt2").module()  # torch alone
        assert torch.allclose(program(batch), expected, atol=1e-4)
        assert torch.allclose(program(batch[:5]), expected[:5], atol=1e-4)  # dynamic batch
        session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        onnx_logits = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        assert np.allclose(onnx_logits, expected.numpy(), atol=1e-4)
        rebuilt = build_model(load_arch(out / "arch.yaml"))
        rebuilt.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
        assert torch.allclose(Normalized(rebuilt, *[tuple(meta["normalization"][k]) for k in ("mean", "std")]).eval()(batch),
                              expected, atol=1e-4)
        loaded, _ = load_exported(out)
        assert torch.allclose(loaded(batch), expected, atol=1e-4)

    # Registered as the experiment's champion, and it loads back from the registry.
    version = client.get_model_version_by_alias("tiny", "champion")
    assert int(version.version) == meta["registered_model"]["version"]
    mlflow.set_tracking_uri(uri)
    registered = mlflow.pytorch.load_model("models:/tiny@champion")
    with torch.no_grad():
        assert torch.allclose(registered(batch), expected, atol=1e-4)

    # The export page's onnxruntime snippet runs where torch cannot be imported.
    (snippet,) = [s for s in re.findall(r"```python\n(.*?)```", EXPORT_PAGE.read_text(), re.S) if "onnxruntime.InferenceSession" in s]
    Image.fromarray(data.images[0].permute(1, 2, 0).numpy()).save(tmp_path / "cat.png")
    snippet = snippet.replace("exports/densenet", str(out)).replace("cat.png", str(tmp_path / "cat.png"))
    ran = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None\n" + snippet], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.strip() in meta["class_names"], ran.stderr

    # evaluate reproduces the accuracies the export recorded, on the same test and validation images, in the same
    # precision (the trial's, where this CPU has it); in fp32 it agrees with the in-memory model.
    split = split_dataset(data.labels, val_fraction=0.1, test_fraction=0.1, seed=0, subset=512)
    for flags, images, name in [((), split.test, "test"), (("--split", "val"), split.val, "val")]:
        status, stdout, err = cli("evaluate", out, *flags, "--json")
        assert status == 0, err
        result = json.loads(stdout)
        assert result["split"] == name and not result["seen_in_training"] and result["precision"] == accuracies[name]["precision"]
        assert result["images"] == len(images) and result["accuracy"] == accuracies[name]["accuracy"] == result["recorded"]
        status, stdout, err = cli("evaluate", out, *flags, "--precision", "fp32", "--json")
        assert status == 0, err
        with torch.no_grad():
            direct = (reference(data.images[images].float() / 255).argmax(1) == data.labels[images]).float().mean().item()
        assert json.loads(stdout)["accuracy"] == pytest.approx(direct)


def test_predict_prints_top_classes(study, tmp_path, cli):
    from PIL import Image

    _, uri, _, _ = study
    out = tmp_path / "export"
    assert cli("export", "tiny", "--retrain-epochs", "0", "--formats", "weights", "--out", out, "--tracking-uri", uri)[0] == 0
    data = load_dataset("synthetic")
    image = tmp_path / "one.png"
    Image.fromarray(data.images[0].permute(1, 2, 0).numpy()).save(image)
    status, stdout, err = cli("predict", out, image, "--top", "2")
    assert status == 0, err
    line = stdout.strip()
    assert line.startswith(f"{image}: class") and line.count("%") == 2
    status, _, err = cli("predict", out, tmp_path / "missing.png")
    assert status == 2 and "missing.png: cannot read image" in err


def test_retraining_on_train_and_validation_after_reevaluating_the_top(study, tmp_path, cli):
    _, uri, _, trials = study
    out = tmp_path / "export"
    status, _, err = cli("export", "tiny", "--top", "2", "--seeds", "2", "--retrain-epochs", "1", "--formats", "weights",
                         "--out", out, "--tracking-uri", uri)
    assert status == 0, err
    meta = json.loads((out / "meta.json").read_text())
    search = meta["accuracies"]["search"]
    assert search["of"].startswith("mean of 2 seeds") and len(search["seeds"]) == 2 and search["images"] == 180
    assert search["accuracy"] == pytest.approx(sum(search["seeds"]) / 2)
    assert meta["trained_on"]["splits"] == ["train", "val"] and meta["trained_on"]["images"] == 512 + 180
    assert meta["accuracies"]["val"]["seen_in_training"] and meta["accuracies"]["val"]["interval"] is None
    assert not meta["accuracies"]["test"]["seen_in_training"]
    assert err.count("2 seeds: mean") == 2  # both candidates were re-evaluated


def test_a_best_trial_without_checkpoint_falls_back_to_the_next(study, tmp_path, cli):
    _, uri, client, trials = study
    out = tmp_path / "export"
    best, second = trials[0], trials[1]
    checkpoint = Path(urlparse(best.info.artifact_uri).path) / "checkpoint"
    moved = tmp_path / "moved"
    shutil.move(checkpoint, moved)
    try:
        status, _, err = cli("export", "tiny", "--retrain-epochs", "0", "--top", "1", "--formats", "weights", "--out", out,
                             "--tracking-uri", uri)
        assert status == 0, err
        assert f"trial {best.data.tags['mlflow.runName']}: no checkpoint recorded; trying the next best" in err
        assert json.loads((out / "meta.json").read_text())["trial_run_id"] == second.info.run_id
        second_checkpoint = Path(urlparse(second.info.artifact_uri).path) / "checkpoint"
        shutil.move(second_checkpoint, tmp_path / "moved2")
        status, _, err = cli("export", "tiny", "--retrain-epochs", "0", "--out", out, "--force", "--tracking-uri", uri)
        assert status == 2 and "no candidate trial has a checkpoint; use --retrain-epochs N" in err
        shutil.move(tmp_path / "moved2", second_checkpoint)
    finally:
        shutil.move(moved, checkpoint)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["export", "nosuch"], "no study named 'nosuch'"),
        (["export", "tiny", "--formats", "pt2,tflite"], "--formats: unknown tflite"),
        (["evaluate", "."], "not an export (no meta.json)"),
    ],
)
def test_export_refuses_bad_input(study, cli, args, expected):
    _, uri, _, _ = study
    extra = ["--tracking-uri", uri] if args[0] == "export" else []
    status, _, err = cli(*args, *extra)
    assert status == 2 and expected in err and "Traceback" not in err


def test_a_best_trial_at_chance_is_refused_unless_forced(ray_session, tmp_path, cli, tiny_space):
    """A study whose best trial learned nothing (a learning rate of 1e-9): export refuses it in one line; --force exports it."""
    tiny_space(tmp_path, "still", **SPACE | {"residual": {"num_blocks": 1, "width": 8}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", tmp_path / "still.yaml", "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "1",
                         "--epochs", "1", "--lr", "1e-9")
    assert status == 0, err
    common = ["--retrain-epochs", "0", "--formats", "weights,onnx", "--out", tmp_path / "out", "--tracking-uri", uri]
    status, _, err = cli("export", "still", *common)
    assert status == 2 and "learned nothing worth exporting; pass --force" in err and "chance level of 10" in err
    assert not (tmp_path / "out").exists()
    status, _, err = cli("export", "still", *common, "--force")
    assert status == 0, err


def write_image_folder(root: Path, per_class: dict[str, int]) -> None:
    """Three classes of 16x16 images, a red, green or blue square under noise, as PNG and JPEG; per_class: sub-folder -> images."""
    generator = torch.Generator().manual_seed(0)
    for part, count in per_class.items():
        for index, name in enumerate(("red", "green", "blue")):
            (root / part / name).mkdir(parents=True)
            for i in range(count):
                image = torch.randint(0, 60, (16, 16, 3), dtype=torch.uint8, generator=generator)
                image[4:12, 4:12, index] += 180
                Image.fromarray(image.numpy()).save(root / part / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_an_image_folder_keeps_its_test_images_until_the_model_is_final(ray_session, tmp_path, cli, monkeypatch, tiny_space):
    """PATH/train is searched, re-evaluated and retrained on; PATH/test is read once, after retraining; evaluate says what was seen."""
    import cnnsearch.data
    import cnnsearch.export.retrain
    import cnnsearch.export.select
    import cnnsearch.study.settings

    root = tmp_path / "images"
    write_image_folder(root, {"train": 16, "test": 8})
    tiny_space(tmp_path, "folder", **SPACE | {"dataset": {"name": f"imagefolder:{root}", "subset": None, "val_fraction": 0.25},
                                              "recipe": {"batch_size": 16}})
    events = []

    def spy(module, name: str, event) -> None:
        original = getattr(module, name)

        def recorded(*args, **kwargs):
            events.append(event(*args, **kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, recorded)

    for module in (cnnsearch.data, cnnsearch.study.settings, cnnsearch.export.select):  # each module's own reference to it
        spy(module, "load_dataset", lambda name, train=True, **_: f"load {'train' if train else 'test'}")
    for module in (cnnsearch.export.select, cnnsearch.export.retrain):  # re-evaluation, then retraining
        spy(module, "train", lambda *args, **kwargs: "train")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache = ["--cache-dir", tmp_path / "cache"]
    status, _, err = cli("run", tmp_path / "folder.yaml", "--tracking-uri", uri, "--storage", tmp_path / "runs", "--sampler", "grid",
                         "--trials", "2", "--scheduler", "none", *cache)
    assert status == 0, err
    assert events == ["load train"] and "(its own test images set aside)" in err
    events.clear()
    out = tmp_path / "export"
    status, stdout, err = cli("export", "folder", "--top", "2", "--retrain-epochs", "1", "--formats", "weights", "--out", out,
                              "--tracking-uri", uri, *cache)
    assert status == 0, err
    assert events == ["load train", "train", "train", "train", "load test"]  # two re-evaluations, the retraining, then the test

    # The records agree: the 48 images of train/ were split 36 + 12, none held out of them; the 24 of test/ were tested once.
    client = mlflow.MlflowClient(uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("folder").experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    params = parent.data.params
    assert (params["split.train_images"], params["split.val_images"], params["split.test_images"]) == ("36", "12", "0")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"]["source"] == f"imagefolder:{(root / 'train').resolve()}" and meta["dataset"]["images"] == 48
    recipe = meta["trained_on"].pop("recipe")  # the trial's own, as it recorded it
    assert meta["trained_on"] == {"splits": ["train", "val"], "images": 48, "epochs": 1, "how": "retrained"}
    assert recipe["batch_size"] == 16 and recipe["lr"] is None
    test, val = meta["accuracies"]["test"], meta["accuracies"]["val"]
    assert test["images"] == 24 and test["images_from"] == f"imagefolder:{(root / 'test').resolve()}" and not test["seen_in_training"]
    assert val["images"] == 12 and val["seen_in_training"]
    assert "seen in training" in stdout and "held out" in stdout

    # evaluate: the test split by default, held out; the validation split and every image were seen in training.
    for flags, split, images, seen in [((), "test", 24, False), (("--split", "val"), "val", 12, True), (("--split", "all"), "all", 72, True)]:
        status, stdout, err = cli("evaluate", out, *flags, "--json", *cache)
        assert status == 0, err
        result = json.loads(stdout)
        assert (result["split"], result["images"], result["seen_in_training"]) == (split, images, seen)
        assert (result["interval"] is None) == seen
        assert result["recorded"] == meta["accuracies"].get(split, {}).get("accuracy")
        status, stdout, err = cli("evaluate", out, *flags, *cache)
        assert status == 0, err
        (row,) = [line for line in stdout.splitlines() if line.strip().startswith(split)]
        assert ("seen in training" in row) == seen and ("held out" in row) != seen


RECIPE_SPACE = SPACE | {"residual": {"num_blocks": 1, "width": 8}, "recipe": {
    "lr": {"low": 0.01, "high": 0.3, "log": True}, "batch_size": [32, 64], "weight_decay": [0.0, 0.0005], "label_smoothing": [0.0, 0.1],
    "warmup": [0.1, 0.3], "schedule": ["onecycle", "cosine"], "crop_padding": [0, 2], "flip": [True, False]}}


def test_a_searched_recipe_is_each_trials_own_and_its_export_retrains_with_it(ray_session, tmp_path, cli, tiny_space):
    tiny_space(tmp_path, "recipes", **RECIPE_SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", tmp_path / "recipes.yaml", "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "3",
                         "--epochs", "1", "--sampler", "random", "--scheduler", "none")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("recipes").experiment_id], "tags.`cnnsearch.trial_id` != ''")
    assert len(runs) == 3
    keys = ("lr", "batch_size", "weight_decay", "label_smoothing", "warmup", "schedule", "crop_padding", "flip")
    drawn = []
    for run in runs:
        recipe = json.loads(Path(client.download_artifacts(run.info.run_id, "recipe.json", str(tmp_path / run.info.run_id))).read_text())
        assert {key: str(recipe[key]) for key in keys} == {key: run.data.params[f"recipe.{key}"] for key in keys}
        # The trial trained with its own learning rate: the peak the schedule reached.
        assert run.data.metrics["peak_lr"] == pytest.approx(recipe["lr"])
        drawn.append(tuple(recipe[key] for key in keys))
    assert len(set(drawn)) == 3
    status, out, err = cli("query", "recipes", "--rows", "recipe.batch_size", "--tracking-uri", uri, "--format", "json")
    assert status == 0, err
    rows = json.loads(out)
    assert {row["recipe.batch_size"] for row in rows} <= {32, 64} and sum(row["n"] for row in rows) == 3

    out_folder = tmp_path / "export"
    status, _, err = cli("export", "recipes", "--retrain-epochs", "1", "--formats", "weights", "--out", out_folder, "--tracking-uri", uri,
                         "--force")
    assert status == 0, err
    meta = json.loads((out_folder / "meta.json").read_text())
    best = max(runs, key=lambda run: run.data.metrics["val_acc"])
    assert {key: str(meta["trained_on"]["recipe"][key]) for key in keys} == {key: best.data.params[f"recipe.{key}"] for key in keys}


def test_an_exported_replicate_records_the_seed_it_trained_with(ray_session, tmp_path, tiny_space, cli):
    # An ablation's replicate r trains with the study's seed + r: the exported checkpoint's seed is that, not the study's.
    tiny_space(tmp_path, dataset={"subset": 128}, budget={"epochs": 1})
    (tmp_path / "seeds.yaml").write_text("name: seeds\nspace: tiny.yaml\nbase: {stem.channels: 8, residual.num_blocks: 1}\n"
                                         "factors:\n  residual.width: [8, 16]\nreplicates: 2\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("ablate", tmp_path / "seeds.yaml", "--tracking-uri", uri, "--storage", tmp_path / "runs", "--seed", "5")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    replicate = client.search_runs([client.get_experiment_by_name("seeds").experiment_id], filter_string="params.replicate = '1'")[0]
    from cnnsearch.export import export_study

    meta = export_study("seeds", tmp_path / "out", retrain_epochs=0, run_id=replicate.info.run_id, formats=("weights",),
                        tracking_uri=uri, force=True, say=lambda line: None)
    assert meta["trial_run_id"] == replicate.info.run_id and meta["seed"] == 6
