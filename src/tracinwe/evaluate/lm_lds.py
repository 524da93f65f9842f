"""LDS, the linear datamodeling score, on a decoder-only language model.

The classifier harness (`tracinwe.evaluate.lds`) carried over to causal LMs:

* **test points** are prompt/completion pairs; the **measured output** of a model on a point is the summed
  negative log-likelihood of the completion's tokens given the prompt (`completion_losses`; lower = better);
* M random subsets S_j holding half the training documents (`lds.random_subsets`) are retrained under each
  seed, paired with that seed's explained run: the same seed (same initial weights), the same tokenizer and
  the full run's seeded document order restricted to the subset (`train_decoder(rows=...)`), via the
  shared, resumable `RetrainRunner` (which stores each retrain's losses as an (n_points, 1) array);
* **sign**: a score > 0 is a proponent (training on the document lowers the test loss), so a method predicts
  that the loss of the model trained on S_j falls as g_j = Σ_{i∈S_j} score_i rises. LDS(x') is the Spearman
  correlation over j of g_j(x') and **minus** the measured loss (`lds_per_point(scores, subsets, -loss)`):
  +1 is a perfect ranking, a method with its sign flipped scores -1, random scores ~0;
* **retraining noise first** (`measure_lm_noise`): same-seed retrains without k random documents (the
  classifier gate's `noise.noise_retrains`) and the other seed's full run, each as the median over points of
  |Δ loss| divided by the point's spread over the subsets (the standard deviation of the M measured losses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from tracinwe.errors import InputTextError, TracInWEError
from tracinwe.evaluate.lds import lds_per_point, random_subsets, subset_retrains
from tracinwe.evaluate.noise import noise_retrains
from tracinwe.evaluate.retrain import Retrain, RetrainRunner
from tracinwe.evaluate.statistics import mean_and_se, paired_comparison
from tracinwe.models.causal_lm import CausalLanguageModel, LMExample
from tracinwe.training.causal_lm import DecoderConfig, train_decoder

#: The method every other one is compared against (paired, per point).
REFERENCE = "TracIn-WE"
#: Further paired comparisons, made when the method was scored (its sparse output-side extension).
COMPARED = (REFERENCE, "TracIn-WE+out")
#: Gate: same-seed noise (median |Δ loss| / subset spread, over points) must stay under this ratio.
NOISE_RATIO_GATE = 0.5


def completion_losses(model, tokenizer, examples: Sequence[LMExample], max_length: int = 64,
                      batch_size: int = 64) -> np.ndarray:
    """Summed NLL (nats) of each example's target tokens (a prompt/completion's completion), in eval mode: (n,) float64."""
    if not examples:
        raise InputTextError("no test examples to measure: pass at least one prompt/completion pair")
    lm = model if isinstance(model, CausalLanguageModel) else CausalLanguageModel(model, tokenizer, max_length=max_length)
    was_training = lm.module.training
    lm.module.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                out.append(lm.token_losses(lm.tokenize(list(examples[start : start + batch_size]))).sum(dim=1).double())
    finally:
        lm.module.train(was_training)
    return torch.cat(out).cpu().numpy()


@dataclass
class LMRetrainTask:
    """What a retrain needs (picklable for the runner's worker processes): documents, test points, recipe, tokenizer.

    ``train(rows, seed)`` trains the decoder on ``rows`` in the full run's order with ``seed`` and the explained
    run's tokenizer; ``evaluate(model, rows)`` is the (len(rows), 1) completion loss of those test points.
    """

    train_docs: list
    test_points: list
    config: DecoderConfig
    tokenizer: object

    def __post_init__(self) -> None:
        if not self.train_docs or not self.test_points:
            raise InputTextError("LM LDS needs training documents and test points: got an empty list")
        bad = [i for i, t in enumerate(self.test_points) if not (isinstance(t, Mapping) and {"prompt", "completion"} <= set(t))]
        if bad:
            raise InputTextError(f"test point {bad[0]} is not a {{'prompt', 'completion'}} dict: "
                                 "LM LDS measures a completion's loss")

    def train(self, rows: Sequence[int], seed: int):
        config = replace(self.config, seed=int(seed))
        return train_decoder(self.train_docs, None, config, tokenizer=self.tokenizer, rows=list(rows)).model

    def evaluate(self, model, rows: Sequence[int]) -> np.ndarray:
        points = [self.test_points[i] for i in rows]
        return completion_losses(model, self.tokenizer, points, self.config.max_length)[:, None]

    def recipe(self) -> dict:
        """Everything besides the `Retrain` that fixes a retrain's outcome (the runner's cache key)."""
        import hashlib
        import json

        blob = json.dumps([self.train_docs, self.test_points], sort_keys=True, default=str).encode()
        vocab = json.dumps(sorted(self.tokenizer.get_vocab().items())).encode()
        return {"task": "causal-lm LDS", "config": asdict(self.config), "data": hashlib.sha256(blob).hexdigest()[:16],
                "tokenizer": hashlib.sha256(vocab).hexdigest()[:16]}


def lm_runner(task: LMRetrainTask, cache_dir, workers: int = 1) -> RetrainRunner:
    """The shared retrain runner over ``task`` (one torch thread per worker), evaluating every test point."""
    return RetrainRunner(task.train, task.evaluate, len(task.train_docs), range(len(task.test_points)), cache_dir,
                         task.recipe(), workers=workers, threads_per_worker=1)


def lm_noise_retrains(n_train: int, seeds: Sequence[int], k: int, repeats: int) -> list[Retrain]:
    """The noise measurement's retrains: each seed's full run and ``repeats`` same-seed deletions of ``k`` random rows."""
    return [Retrain.make(s) for s in seeds] + noise_retrains(n_train, k, seeds, repeats)


#: Methods `lm_method_scores` knows; the baselines other than random come from `evaluate.baselines.lm_baselines`.
#: ``target-rows`` / ``TracIn-WE+out`` come from `evaluate.baselines.lm_target_rows`.
LM_METHODS = ("TracIn-WE", "TracIn-WE-Top10", "TracIn-WE+out", "target-rows", "BM25", "TracIn-last", "TrackStar-like",
              "random")


def example_text(example: LMExample) -> str:
    """A document's text, or a prompt/completion pair's prompt + completion (what lexical retrieval sees)."""
    return example["prompt"] + example["completion"] if isinstance(example, Mapping) else str(example)


def lm_method_scores(methods: Sequence[str], checkpoints: Sequence[tuple[object, float]], tokenizer,
                     train_docs: Sequence[LMExample], test_points: Sequence[LMExample], max_length: int = 64,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """``{method: (n_test, n_train) float64}`` on one run's ``[(model, lr), ...]`` checkpoints; > 0 = proponent."""
    unknown = [m for m in methods if m not in LM_METHODS]
    if unknown:
        raise TracInWEError(f"unknown LM LDS methods {unknown}: pick from {list(LM_METHODS)}")
    out: dict[str, np.ndarray] = {}
    for name in methods:
        if name in ("TracIn-WE+out", "target-rows"):
            from tracinwe.evaluate.baselines.lm_target_rows import lm_target_row_scores

            out[name] = lm_target_row_scores(list(checkpoints), list(train_docs), list(test_points), max_length=max_length,
                                             include_input=name == "TracIn-WE+out", tokenizer=tokenizer)
        elif name in ("TracIn-WE", "TracIn-WE-Top10"):
            from tracinwe.tracin import TracInWE

            tw = TracInWE(list(checkpoints), tokenizer=tokenizer, max_length=max_length, task="causal-lm",
                          top_k=10 if name == "TracIn-WE-Top10" else None)
            out[name] = np.asarray(tw.scores(list(train_docs), None, list(test_points), None), dtype=np.float64)
        elif name == "random":
            out[name] = np.random.default_rng([seed, 7]).standard_normal((len(test_points), len(train_docs)))
        else:
            from tracinwe.evaluate.baselines import lm_baselines

            models = [(m, lr) for m, lr in checkpoints]
            if name == "BM25":
                scores = lm_baselines.bm25_scores([example_text(d) for d in train_docs], [example_text(t) for t in test_points])
            elif name == "TracIn-last":
                scores = lm_baselines.lm_last_layer_scores(models, list(train_docs), list(test_points), max_length=max_length)
            else:
                scores = lm_baselines.lm_projected_gradient_scores(models, list(train_docs), list(test_points), seed=seed,
                                                                   max_length=max_length)
            out[name] = np.asarray(scores, dtype=np.float64)
    return out


def losses_of(done: Mapping[Retrain, np.ndarray], retrains: Sequence[Retrain]) -> np.ndarray:
    """(len(retrains), n_points) measured losses, in the order given."""
    return np.stack([done[r][:, 0] for r in retrains])


@dataclass
class LMNoiseReport:
    """Retraining noise of the per-point completion loss, against how much the subsets move it."""

    k: int
    repeats: int
    seeds: list[int]
    same_seed_median_abs_delta: float  # nats, same seed without k random documents
    other_seed_median_abs_delta: float | None  # nats, full run of another seed (None with one seed)
    subset_spread_median: float  # nats, per-point std over the M subset retrains, median over points
    same_seed_ratio: float  # median over points of |Δ| / the point's subset spread
    other_seed_ratio: float | None
    gate: float = NOISE_RATIO_GATE

    @property
    def passed(self) -> bool:
        return self.same_seed_ratio <= self.gate

    def message(self) -> str:
        other = (f"; another seed's full run: {self.other_seed_median_abs_delta:.3f} nats, ratio {self.other_seed_ratio:.2f}"
                 if self.other_seed_ratio is not None else "")
        verdict = "ok" if self.passed else "OVER THE GATE: retraining noise rivals what the subsets do, LDS means little"
        return (f"retraining noise: same seed without {self.k} random documents moves the completion loss by "
                f"{self.same_seed_median_abs_delta:.3f} nats (median), {self.same_seed_ratio:.2f} of its spread over the "
                f"subsets ({self.subset_spread_median:.3f} nats){other}; gate {self.gate}: {verdict}")

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def measure_lm_noise(runner: RetrainRunner, seeds: Sequence[int], k: int, repeats: int,
                     subset_losses: Mapping[int, np.ndarray], progress: bool = True) -> LMNoiseReport:
    """Same-seed random deletions (``noise.noise_retrains``) and cross-seed full runs, relative to the subset spread.

    ``subset_losses[seed]`` is the (M, n_points) measured loss of that seed's subset retrains.
    """
    seeds = [int(s) for s in seeds]
    fulls = {s: Retrain.make(s) for s in seeds}
    done = runner.run(lm_noise_retrains(runner.n_train, seeds, k, repeats), progress, desc="noise")
    spread = {s: np.asarray(subset_losses[s]).std(axis=0, ddof=1) for s in seeds}
    floor = 1e-12
    same, same_ratio = [], []
    for s in seeds:
        base = done[fulls[s]][:, 0]
        for r in noise_retrains(runner.n_train, k, [s], repeats):
            delta = np.abs(done[r][:, 0] - base)
            same.append(delta)
            same_ratio.append(delta / np.maximum(spread[s], floor))
    other = other_ratio = None
    if len(seeds) > 1:
        delta = np.abs(done[fulls[seeds[1]]][:, 0] - done[fulls[seeds[0]]][:, 0])
        other = float(np.median(delta))
        other_ratio = float(np.median(delta / np.maximum(spread[seeds[0]], floor)))
    return LMNoiseReport(int(k), int(repeats), seeds, float(np.median(np.concatenate(same))), other,
                         float(np.median(np.concatenate(list(spread.values())))),
                         float(np.median(np.concatenate(same_ratio))), other_ratio)


@dataclass
class LMLDSResult:
    """``lds[method]``: (n_seeds, n_points) Spearman of Σ_{i∈S_j} score_i with −loss; ``losses[seed]``: (M, n_points)."""

    methods: list[str]
    seeds: list[int]
    lds: dict[str, np.ndarray]
    losses: dict[int, np.ndarray]
    n_subsets: int
    fraction: float
    settings: dict = field(default_factory=dict)

    def per_point(self, method: str) -> np.ndarray:
        """Each test point's LDS, averaged over seeds."""
        return self.lds[method].mean(axis=0)

    def compared(self) -> list[str]:
        """The methods others are compared against (paired): those of `COMPARED` that were scored."""
        return [name for name in COMPARED if name in self.lds]

    def summary(self) -> list[dict]:
        """Methods ranked by mean LDS, with SE over points, per-seed means and, paired, TracIn-WE (and TracIn-WE+out,
        when scored) minus the method."""
        rows = []
        for name in self.methods:
            mean, se = mean_and_se(self.per_point(name))
            row = {"method": name, "lds": mean, "lds_se": se, "lds_by_seed": self.lds[name].mean(axis=1).tolist()}
            for ref in self.compared():
                if name != ref:
                    row[f"{ref} minus this"] = paired_comparison(self.per_point(ref), self.per_point(name)).to_json()
            rows.append(row)
        return sorted(rows, key=lambda r: -r["lds"])

    def markdown(self) -> str:
        refs = self.compared()
        head = "".join(f" {ref} − method (paired, Wilcoxon p) |" for ref in refs)
        lines = [f"| method | LDS ± SE | per seed |{head}", "|---|---|---|" + "---|" * len(refs)]
        for row in self.summary():
            cells = []
            for ref in refs:
                p = row.get(f"{ref} minus this")
                cells.append(f" {p['mean']:+.3f} ± {p['se']:.3f} (p={p['wilcoxon_p']:.2g}) |" if p else " |")
            seeds = ", ".join(f"{v:+.3f}" for v in row["lds_by_seed"])
            lines.append(f"| {row['method']} | {row['lds']:+.3f} ± {row['lds_se']:.3f} | {seeds} |" + "".join(cells))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"metric": "LDS: Spearman over subsets of the summed scores vs minus the completion loss (nats) of the "
                          "decoder retrained on the subset (score > 0 = proponent = lowers the loss)",
                "summary": self.summary(), "seeds": self.seeds, "n_subsets": self.n_subsets, "fraction": self.fraction,
                "per_seed_per_point": {name: v.tolist() for name, v in self.lds.items()}, "settings": self.settings}


def run_lm_lds(runner: RetrainRunner, scores: Mapping[int, Mapping[str, np.ndarray]], n_subsets: int = 32,
               fraction: float = 0.5, subset_seed: int = 0, progress: bool = True,
               settings: dict | None = None) -> LMLDSResult:
    """Retrain the shared subsets under every seed (paired with that seed's run) and score each method.

    ``scores[seed][method]`` is (n_points, n_train), computed on *that seed's* explained run; > 0 = proponent.
    """
    if not scores:
        raise TracInWEError("no scores: pass {seed: {method: (n_points, n_train) array}}")
    seeds = [int(s) for s in scores]
    methods = list(next(iter(scores.values())))
    n_points = len(runner.eval_rows)
    for s, per in scores.items():
        if list(per) != methods:
            raise TracInWEError(f"seed {s} has methods {list(per)}, seed {seeds[0]} has {methods}: score the same methods")
        bad = {name: np.shape(m) for name, m in per.items() if np.shape(m) != (n_points, runner.n_train)}
        if bad:
            raise TracInWEError(f"scores must be (n_points={n_points}, n_train={runner.n_train}), got {bad} for seed {s}")
    subsets = random_subsets(runner.n_train, n_subsets, fraction, subset_seed)
    jobs = [r for s in seeds for r in subset_retrains(subsets, s)]
    done = runner.run(jobs, progress, desc="LM LDS retrains")
    losses = {s: losses_of(done, subset_retrains(subsets, s)) for s in seeds}
    lds = {name: np.stack([lds_per_point(scores[s][name], subsets, -losses[s]) for s in seeds]) for name in methods}
    return LMLDSResult(methods, seeds, lds, losses, n_subsets, fraction, dict(settings or {}))
