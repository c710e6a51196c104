"""The project's vocabulary, defined once: statuses, metric, param, tag and artifact names, the
keys of a trial's reports, and the tables of samplers, schedulers, data sets and activations.

Every other module imports its words from here; this module imports nothing of cnnsearch
and no third-party package, so that any layer may read it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVATIONS",
    "ARCH_FILE",
    "CHECKPOINT_FOLDER",
    "DATASETS",
    "DEFAULT_TRACKING_URI",
    "META_FILE",
    "PARETO",
    "PASSED_OVER",
    "PROXIES",
    "PROXY_AGGREGATES",
    "PROXY_BATCH",
    "RECIPE_FILE",
    "REJECTED",
    "RESULTS",
    "SAMPLERS",
    "SCHEDULERS",
    "SCORED",
    "TABLES",
    "WEIGHTS_FILE",
    "Metrics",
    "Params",
    "Report",
    "Status",
    "Tags",
]


class Status(StrEnum):
    """How a trial ended: the value of its ``cnnsearch.status`` tag, and what ``train()`` returns."""

    COMPLETED = "completed"  # trained for its whole budget: epochs, max_images or max_seconds
    STOPPED_EARLY = "stopped early"  # stopped by the scheduler before its budget ran out
    STOPPED = "stopped"  # train()'s callback asked it to stop: a trial that Tune stops is recorded STOPPED_EARLY
    FAILED = "failed"  # its architecture raised, or its machine failed (a lost worker, say) more often than Tune retries
    DIVERGED = "diverged"  # its loss became NaN, or exploded while it stayed at chance: the reason holds the values


SCORED = (Status.COMPLETED, Status.STOPPED_EARLY)  # the statuses of trials that have a validation accuracy


class Metrics:
    """Metric names, defined once. Per-epoch ones are logged with step = epoch."""

    VAL_ACC = "val_acc"
    VAL_LOSS = "val_loss"
    TRAIN_LOSS = "train_loss"
    LR = "lr"
    PARAMS = "params"
    MACS = "macs"
    FLOPS = "flops"
    LATENCY = "latency_ms"  # median of one eval-mode forward of one image, measured by the driver before training (a tabular trial: the table's)
    MEMORY_ESTIMATE = "memory_estimate_mib"  # a trial's expected peak resident memory: what it reserves in Ray
    PEAK_RSS = "peak_rss_mib"  # the trial's measured peak resident memory, after each epoch
    EPOCHS = "epochs"
    PEAK_LR = "peak_lr"  # the schedule's peak: scaled to the batch, or chosen by the range test
    COMPILE_SECONDS = "compile_seconds"  # spent in torch.compile so far (recipe.compile), apart from the training rate
    TRAIN_SECONDS = "train_seconds"  # a tabular trial's: the time the table's authors took to train the cell
    REJECTED = "rejected_proposals"  # of a study: proposals never trained (over limits or memory, unable to build or train)
    PROXY = "proxy"  # a prefiltered trial's value of the prefilter's proxy is the metric proxy.NAME
    PASSED_OVER = "passed_over_proposals"  # of a study: proposals a prefilter scored and never trained
    BEST_VAL_ACC = "best_val_acc"  # of a finished study: its best completed trial's val_acc
    TEST_ACC = "test_acc"  # of an export run: the exported model on the held-out test images, and its interval's ends
    TEST_ACC_LOW = "test_acc_low"
    TEST_ACC_HIGH = "test_acc_high"
    PER_EPOCH = (VAL_ACC, VAL_LOSS, TRAIN_LOSS, LR)


class Params:
    """Trial params that are not knobs."""

    PRECISION = "precision"  # what recipe.precision resolved to on the trial's device
    SEED = "seed"  # the seed a trial trained with (an ablation replicate's: the study's seed + its replicate)
    RECIPE = "recipe"  # of a study: its recipe as JSON, searched keys at their defaults (each trial's is its recipe.json)


class Tags:
    """MLflow tag names of studies and trials."""

    STUDY = "cnnsearch.study"
    TRIAL = "cnnsearch.trial_id"
    STATUS = "cnnsearch.status"  # a Status
    REASON = "cnnsearch.reason"
    CELL = "cnnsearch.cell"  # an ablation trial's cell: its levels and replicate
    ABLATION = "cnnsearch.ablation"  # the experiment an ablation study runs
    DESIGN = "cnnsearch.design"  # an ablation's design: full_factorial or one_at_a_time
    BASELINE = "cnnsearch.baseline"  # one factor at a time: JSON of each factor's baseline level, as its trials' params hold it
    SPACE_FILE = "cnnsearch.space_file"
    TRIALS = "cnnsearch.trials"  # planned trials: a tag, as an extended study changes it
    FAMILY = "cnnsearch.family"
    SPACE_HASH = "cnnsearch.space_hash"
    ARCH_HASH = "cnnsearch.arch_hash"
    NASBENCH201 = "nasbench201.arch"  # a NAS-Bench-201 network's cell, as the benchmark's string: also a query column and meta.json key
    TRIAL_DIR = "cnnsearch.trial_dir"  # the trial's folder in Tune's storage: its checkpoints, to resume it
    OBJECTIVES = "cnnsearch.objectives"  # of a study: JSON list of {metric, goal}
    LATENCY_MACHINE = "cnnsearch.latency_machine"  # what measured latency_ms: device, processor, threads, runtime
    TABULAR = "cnnsearch.tabular"  # of a study and its trials: the table its accuracies were looked up in, not trained (one of TABLES)
    RAY_NODE = "ray.node_id"  # the Ray node a trial trained on (after a lost worker, the node it went on on)
    RAY_HOSTNAME = "ray.hostname"  # that node's host name
    BEST_RUN = "cnnsearch.best_run_id"  # of a finished study: its best completed trial's run
    EXPORT = "cnnsearch.export"  # of an export run: the trial run it exported
    PARENT = "mlflow.parentRunId"  # how the MLflow UI nests runs
    RUN_NAME = "mlflow.runName"


class Report:
    """Keys of what a trial reports to the driver after each epoch, besides the per-epoch metrics."""

    EPOCH = "epoch"
    BUDGET_SPENT = "budget_spent"  # the trial has trained for its whole budget
    TRAIN_IMAGES_PER_S = "train_images_per_s"
    FAILED = "failure"  # present when the trial's own code failed: the reason
    DIVERGED = "loss_diverged"  # with FAILED: the failure is a diverged loss


# Artifacts of studies and trials in MLflow.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
WEIGHTS_FILE = "weights.pt"  # a trial's state_dict, saved with torch.save: loads with weights_only=True
CHECKPOINT_FOLDER = "checkpoint"
RECIPE_FILE = "recipe.json"  # a trial's recipe, searched keys drawn (a study's is its parent's recipe param)
REJECTED = "rejected"  # a study's rejected proposals, knobs and reason: rejected.json and rejected.csv
PASSED_OVER = "passed_over"  # the proposals a study's prefilter scored and did not train, knobs and proxy value: passed_over.csv
RESULTS = "results"  # a study's trials, best first: results.json and results.csv
ARCH_FILE = "arch.yaml"  # a trial's or an export's architecture, as load_arch reads it
META_FILE = "meta.json"  # an export's description: classes, input, normalization, accuracies, provenance
PARETO = "pareto"  # a study's Pareto front over its objectives: pareto.csv

# Tables of names. Each is the one list that the space's schema, the flags and the code that acts on a name read.
SAMPLERS = ("tpe", "random", "grid", "nsga2", "evolution", "gp")
SCHEDULERS = ("asha", "none")
DATASETS = ("cifar10", "cifar100", "synthetic", "imagefolder:PATH")
# The tables whose published accuracies a study can look up instead of training (--tabular); nasbench201 alone is the first.
TABLES = ("nasbench201:cifar10", "nasbench201:cifar100", "nasbench201:imagenet16")
ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "hardswish")
# Zero-cost proxies (cnnsearch.proxies), each of one network, and their aggregates, each over a population of networks.
PROXIES = ("params", "macs", "synflow", "naswot", "jacob_cov", "grad_norm", "snip")
PROXY_AGGREGATES = ("vote", "mean_rank")
PROXY_BATCH = 64  # images a proxy scores: Abdelfattah et al. (ICLR 2021) scored NAS-Bench-201 with one batch of 64
