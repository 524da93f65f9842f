"""`TracInWE`: the facade. Checkpoints in, influence scores and word-level explanations out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from tracinwe.capture.gradients import CaptureSettings, capture_checkpoints, capture_token_gradients, iter_token_gradients
from tracinwe.capture.records import TokenGradients
from tracinwe.errors import CheckpointError
from tracinwe.method import CheckpointMethod, Examples
from tracinwe.models.checkpoints import check_checkpoint_folder, read_learning_rate
from tracinwe.models.contract import TextClassifier
from tracinwe.scoring.influence import TokenMajor, influence_matrix
from tracinwe.scoring.words import WordContribution, token_contributions, word_contributions
from tracinwe.validation import refuse_lm_labels


class TracInWE(CheckpointMethod):
    """TracIn on the input word embeddings, summed over checkpoints: a `CheckpointMethod`.

    Args:
        models: ``[(model, learning_rate), ...]``, oldest checkpoint first. A model is a
            HuggingFace sequence classifier or ``*ForCausalLM`` (with ``tokenizer``), a `TextClassifier`
            (or `CausalLanguageModel`) or a checkpoint folder.
        tokenizer: the HF tokenizer of the models.
        max_length: tokens per text (longer texts are truncated).
        top_k: TracIn-WE-Topk: keep the k positions of largest gradient norm (None: all).
        batch_size: examples per forward/backward pass.
        keep_special_tokens: True (default) keeps [CLS]/[SEP]; False drops them; or a set of tokens to keep.
        device: where to run ("cpu", "cuda"); default: where the model is.
        progress: show progress bars.
        task: "classification" or "causal-lm"; None (default) detects it from the checkpoints.
        precision: "float32" (default, exact) or "bfloat16" (the forward pass under autocast: faster on
            a GPU, scores within about 1e-2 relative; see `CaptureSettings`).

    Language models (``task="causal-lm"``, see docs/language-models.md): an example is a string
    (loss on every token after the first), a ``{"prompt", "completion"}`` dict (loss on the
    completion) or a chat-message list (the tokenizer's chat template; loss on the last assistant
    message); labels are None: ``tw.scores(train, None, test, None)``. A document longer than
    ``max_length`` tokens is an error, not truncated.

    Sign convention: ``score > 0`` means proponent (training on it lowered the test loss).
    Scores and self-influence come from `CheckpointMethod`; this class supplies the sparse
    word-embedding gradients (`represent`) and their shared-token dot product (`compare`).
    """

    supports_pairs = True
    supports_causal_lm = True

    def __init__(
        self,
        models: Sequence[tuple[object, float]],
        tokenizer=None,
        max_length: int = 128,
        top_k: int | None = None,
        batch_size: int = 32,
        keep_special_tokens: bool | Sequence[str | int] = True,
        device: str | None = None,
        progress: bool = False,
        task: str | None = None,
        precision: str = "float32",
    ) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device, task=task)
        self.settings = CaptureSettings(
            top_k=top_k,
            keep_special_tokens=keep_special_tokens if isinstance(keep_special_tokens, bool) else frozenset(keep_special_tokens),
            batch_size=batch_size,
            max_length=max_length,
            precision=precision,
        )
        self.progress = progress
        self.name = "TracIn-WE" if top_k is None else f"TracIn-WE-Top{top_k}"

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[str | Path], learning_rates: Sequence[float] | None = None, tokenizer=None, **kwargs
    ) -> "TracInWE":
        """Checkpoint folders (HF ``save_pretrained`` or Trainer ``checkpoint-*``), loaded one at a time.

        Learning rates default to those recorded by the Trainer (``trainer_state.json``) or ``tracinwe train``.
        """
        paths = [check_checkpoint_folder(p) for p in paths]
        if learning_rates is None:
            learning_rates = [read_learning_rate(p) for p in paths]
        if len(learning_rates) != len(paths):
            raise CheckpointError(f"{len(learning_rates)} learning rates for {len(paths)} checkpoints: pass one per checkpoint")
        return cls(list(zip(paths, learning_rates)), tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_settings(
        cls, settings: CaptureSettings, checkpoints: Sequence, learning_rates: Sequence[float] | None = None, tokenizer=None,
        device: str | None = None, progress: bool = False,
    ) -> "TracInWE":
        """The facade over ``checkpoints`` (folders, or ``(model, lr)`` pairs) capturing with ``settings``.

        The inverse of ``tw.settings``: ``TracInWE.from_settings(tw.settings, paths)`` captures as ``tw`` does.
        """
        options = dict(tokenizer=tokenizer, max_length=settings.max_length, top_k=settings.top_k, batch_size=settings.batch_size,
                       keep_special_tokens=settings.keep_special_tokens, device=device, progress=progress,
                       precision=settings.precision)
        if all(isinstance(c, (str, Path)) for c in checkpoints):
            tw = cls.from_checkpoints(checkpoints, learning_rates, **options)
        else:
            tw = cls(checkpoints, **options)
        tw.settings = settings
        return tw

    # -- checkpoints -------------------------------------------------------------------------

    @property
    def checkpoint_paths(self) -> list[Path | None]:
        """Each checkpoint's folder, oldest first (None for a model given in memory)."""
        return [c.path for c in self.checkpoints]

    def load_classifiers(self) -> list[TextClassifier]:
        """Every checkpoint's classifier, each folder loaded once now; the caller holds them (memory: all checkpoints)."""
        return [ckpt.load(self.device or "cpu") for ckpt in self.checkpoints]

    def keep_loaded(self) -> None:
        """Load every checkpoint folder now and keep all of them in memory.

        By default one folder is loaded at a time to bound memory; a server answering
        many queries trades that memory for latency (no reload per query).
        """
        for c, ckpt in enumerate(self.checkpoints):
            if ckpt.classifier is None:
                ckpt.classifier = self.classifier(c)
        self._loaded = None
        self._check_consistent()

    # -- capture -----------------------------------------------------------------------------

    def capture(
        self,
        texts: Sequence[str],
        labels: Sequence[int] | None = None,
        text_pairs: Sequence[str] | None = None,
        role: str = "test",
    ) -> list[TokenGradients]:
        """TokenGradients of every checkpoint (in memory). ``labels=None``: the final model's prediction.

        ``role`` only names the inputs in error messages ("test" -> ``test_texts[3] is empty``).
        """
        inputs = self.examples(texts, labels, text_pairs, role)
        classifiers = (self.classifier(c) for c in range(len(self.checkpoints)))  # folders load one at a time
        return capture_checkpoints(classifiers, inputs.texts, inputs.labels, inputs.pairs, self.settings, self.device,
                                   self.progress)

    def iter_capture(
        self, texts: Sequence[str], labels: Sequence[int] | None, text_pairs: Sequence[str] | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[tuple[int, int, TokenGradients]]:
        """Stream ``(checkpoint, start, records)`` chunk by chunk: memory bounded by the chunk."""
        texts, labels, text_pairs = self.check_inputs(texts, labels, text_pairs, "train")
        for c in range(len(self.checkpoints)):
            for start, rec in iter_token_gradients(
                self.classifier(c), texts, labels, text_pairs, self.settings, self.device, chunk_size,
                self.progress, f"checkpoint {c + 1}/{len(self.checkpoints)}",
            ):
                yield c, start, rec

    # -- the method: sparse word-embedding gradients, dotted over shared tokens --------------

    def represent(self, c: int, examples: Examples) -> TokenGradients:
        """The examples' word-embedding gradients G_c(x)[w] at checkpoint ``c``."""
        clf = self.classifier(c)
        return capture_token_gradients(clf, examples.texts, examples.labels, examples.pairs, self.settings, self.device)

    def represent_chunks(self, c: int, examples: Examples) -> Iterator[tuple[int, TokenGradients]]:
        """Chunk by chunk, so memory does not grow with the number of training examples."""
        yield from iter_token_gradients(
            self.classifier(c), examples.texts, examples.labels, examples.pairs, self.settings, self.device,
            progress=self.progress, description=f"checkpoint {c + 1}/{len(self.checkpoints)}",
        )

    def compare(self, queries: TokenGradients, keys: TokenGradients) -> torch.Tensor:
        """``sum_{w in x and x'} G(x)[w] . G(x')[w]`` over the tokens both examples contain."""
        return influence_matrix(self._query_side(queries), TokenMajor.from_records(keys))

    def _query_side(self, queries: TokenGradients) -> TokenMajor:
        """The query records token-major, converted once for all the training chunks they meet.

        The cache holds the last records seen (by identity); threads racing on it only recompute.
        """
        cached = getattr(self, "_query_cache", None)
        if cached is None or cached[0] is not queries:
            cached = self._query_cache = (queries, TokenMajor.from_records(queries))
        return cached[1]

    def diagonal(self, rep: TokenGradients) -> torch.Tensor:
        """``||G(x)||^2`` per example."""
        return rep.squared_norms()

    # -- explanation -------------------------------------------------------------------------

    def word_contributions(
        self,
        train_text: str,
        train_label: int | str | None,
        test_text: str,
        test_label: int | str | None = None,
        train_pair: str | None = None,
        test_pair: str | None = None,
    ) -> list[WordContribution]:
        """Each shared token's contribution to the (train, test) score, largest magnitude first.

        The contributions sum to ``scores([train_text], ..., [test_text], ...)[0, 0]``.
        A language model takes documents and ``train_label=None``.
        """
        if self.is_causal_lm:
            if train_label is not None or test_label is not None:
                refuse_lm_labels([train_label, test_label])
            both = self.capture([train_text, test_text], None, role="train/test")
            return self.explain_pair(both, both, train_text, test_text, 0, 1)
        if test_label is None:
            test_label = int(self.predict([test_text], [test_pair] if test_pair is not None else None)[0].argmax())
        if (train_pair is None) != (test_pair is None):
            train = self.capture([train_text], [train_label], [train_pair] if train_pair is not None else None, role="train")
            test = self.capture([test_text], [test_label], [test_pair] if test_pair is not None else None)
            return self.explain_pair(train, test, train_text, test_text, train_pair=train_pair, test_pair=test_pair)
        pairs = None if train_pair is None else [train_pair, test_pair]
        both = self.capture([train_text, test_text], [train_label, test_label], pairs, role="train/test")
        return self.explain_pair(both, both, train_text, test_text, 0, 1, train_pair=train_pair, test_pair=test_pair)

    def explain_generation(
        self, prompt: str, max_new_tokens: int = 20, completion: str | None = None, *, train: Sequence, k: int = 5,
        words: int | None = 5,
    ):
        """A causal LM's completion of ``prompt`` (greedy, final checkpoint; or ``completion``) explained against
        ``train``: its top proponents/opponents and each token's top supporting documents with their shared tokens.

        Returns a `tracinwe.generation.GenerationExplanation`; its per-token rows sum to the completion's scores.
        """
        from tracinwe.generation import explain_generation

        return explain_generation(self, prompt, train, max_new_tokens, completion, k, words)

    def explain_pair(
        self,
        train: Sequence[TokenGradients],
        test: Sequence[TokenGradients],
        train_text: str,
        test_text: str,
        train_index: int = 0,
        test_index: int = 0,
        train_pair: str | None = None,
        test_pair: str | None = None,
    ) -> list[WordContribution]:
        """Word contributions from already captured records (no new forward passes)."""
        totals = token_contributions(train, test, self.learning_rates, train_index, test_index)
        clf = self.final
        train_ids = clf.tokenize([train_text], [train_pair] if train_pair is not None else None)["input_ids"][0].tolist()
        test_ids = clf.tokenize([test_text], [test_pair] if test_pair is not None else None)["input_ids"][0].tolist()
        return word_contributions(totals, clf.token_strings(sorted(totals)), train_ids, test_ids)
