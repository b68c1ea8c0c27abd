"""Config schema of the ``dnc_ebr`` source kind (defaults = the best settings measured)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recall_core.training.config import NeuralConfig


class DncEbrConfig(NeuralConfig):
    """Divide-and-conquer EBR (Kuaishou, arXiv 2302.02657) on the shared training kit.

    Defaults are the best one-pass settings measured on ml-1m-3k (row 4e of
    ``benchmarks/results/dnc_ebr_ml-1m-3k.md``: HR@20 0.4075, +19.0% over the SASRec-paper
    row 1): item2vec + K-means clusters, in-cluster negatives, one shared encoder (no prompt:
    the paper's naive multi-task) whose last state also feeds the intent head, merged by
    ``quota="score"`` (every cluster's candidates ranked by the model's log P(i | u), which
    matched or beat the paper's intent quota on every row measured). The paper's final
    method is ``prompt="hadamard"``; on this data it trailed the unprompted encoder on every
    pairing measured (rows 6/4, 6s/4s, 6sa and 6sw/4s, 6se/4e) except prompts switched on
    after 40 unprompted epochs (rows 6sl and 6sl1: HR@20 0.4151 and 0.4121 against 4e's
    0.4075). It is a setting, not the default: its prompted epochs train at about a fifth of
    the unprompted speed, and an unprompted model serves one encoder pass per user, not K.
    With the inherited ``loss="softmax"`` the in-cluster loss is exact (a softmax
    over the positive's cluster, the limit of sampled in-cluster negatives).
    Benchmark rows: ``prompt="none", negatives="mixed"`` is the paper's SASRec+,
    ``prompt="none", negatives="in_cluster"`` its naive multi-task baseline.
    """

    # ---- encoder ----------------------------------------------------------------
    max_len: int = Field(50, ge=1)
    """Most recent items the encoder reads (the kit's default is 200). On ml-1m-3k the last
    50 beat the last 200 for the naive (HR@20 0.3868 vs 0.3821) and the Hadamard model
    (0.3464 vs 0.3201 best merge) and trained in half the time (rows 4s and 6s of
    ``benchmarks/results/dnc_ebr_ml-1m-3k.md``); serving encodes a quarter of the tokens."""

    # ---- clusters ---------------------------------------------------------------
    clusters: int = Field(10, ge=1)
    """K, the number of item clusters (paper: 10 on ML-1M); ``cluster_by="category"`` ignores it."""
    cluster_by: Literal["item2vec", "category"] = "item2vec"
    """``item2vec``: K-means over skip-gram item embeddings of the training sequences;
    ``category``: one cluster per item category (uncategorised items form one more)."""
    item2vec_dim: int = Field(32, ge=2)
    """Width of the item2vec embeddings clustered by K-means."""
    item2vec_window: int = Field(5, ge=1)
    """Skip-gram context: items at most this many steps apart in a sequence are pairs."""
    item2vec_negatives: int = Field(5, ge=1)
    """Negatives per pair (drawn ∝ count^0.75, word2vec's unigram table)."""
    item2vec_epochs: int = Field(3, ge=1)
    """Passes over the skip-gram pairs."""
    item2vec_max_pairs: int = Field(2_000_000, ge=1)
    """Cap on the pairs of one pass (a seeded subsample beyond it keeps clustering in seconds)."""
    kmeans_iterations: int = Field(25, ge=1)

    # ---- negatives ----------------------------------------------------------------
    negatives: Literal["in_cluster", "mixed", "global"] = "in_cluster"
    """``in_cluster``: negatives from the positive's own cluster (the paper's loss);
    ``mixed``: ``hard_ratio`` of them from the positive's cluster, the rest uniform over
    the catalogue (the paper's SASRec+); ``global``: the kit's ``sampler`` / ``loss`` as is."""
    hard_ratio: float = Field(0.5, ge=0.0, le=1.0)
    """``mixed`` only: share of same-cluster (hard) negatives among ``num_negatives``."""

    # ---- prompt-like multi-task adaptation -----------------------------------------
    prompt: Literal["none", "prefix", "hadamard", "hadamard_next"] = "none"
    """How task k (a cluster) enters the encoder: ``hadamard`` scales every item embedding by
    a learnable t_k (the paper's final method); ``prefix`` prepends t_k as a token; ``none``
    shares one user vector (the default: HR@20 0.4075; ``hadamard`` with the same encoder-state
    intent head reached 0.3971 after a 20-epoch warm-up and 0.4151 after a 40-epoch one, rows
    6se and 6sl; at 50 items with one task per window and no warm-up, ``prefix`` reached
    0.3601 and ``hadamard`` 0.3464 against ``none``'s 0.3868, rows 5s, 6s and 4s).
    ``hadamard_next`` (ours) gives every position its own prompt, that of its next item's
    cluster (the last position: the task's), so a position's prompt is its training target's
    task and one pass trains every position under it (``task_sampling`` and
    ``prompt_targets`` do not apply); serving changes only the last position per task. Row 6p:
    HR@20 0.4078 against the unprompted 4e's 0.4075, so on ml-1m-3k it trains every position
    prompted at the cost of an unprompted pass (plus the ``encoder`` intent head's own pass)
    and gains nothing; after a 40-epoch warm-up (row 6pl) its prompted epochs (1.6× an
    unprompted one) never beat the warm-up's best epoch."""
    task_sampling: Literal["one", "all"] = "all"
    """With a prompt, a window's hidden states depend on the task. ``one``: each window takes
    the cluster of one of its targets (drawn uniformly) and trains the positions aimed at that
    cluster (one encoder pass, SASRec cost); ``all``: one pass per cluster present in the
    window, so every position trains every epoch (up to K times the cost). ``all`` is the
    default: on ml-1m-3k it reached HR@20 0.3778 against 0.3464 (rows 6sa, 6s of
    ``benchmarks/dnc_ebr_ml1m.py``), at 331 against 1,488 windows/s."""

    prompt_targets: Literal["next", "next_in_task"] = "next"
    """With a prompt, what a position trains towards under its row's task k. ``next``: its
    own next item, and only when that item is in cluster k (the paper's samples: the
    target's cluster is the task). ``next_in_task``: the first item of cluster k at or after
    it in the window (the next item of k the user reached), so one pass trains every
    position with a later item of k; with ``task_sampling="one"`` a prompted epoch then
    trains nearly as many targets as an unprompted one at about the same cost. On ml-1m-3k
    (rows 6nl, 6nls of ``benchmarks/dnc_ebr_ml1m.py``: after 40 unprompted epochs, with
    ``intent_input="task_state"``) a prompted epoch took 1.10× and 0.96× an unprompted epoch
    of the same run and trained 86% of its targets, but validation NDCG@10 fell from 0.1913
    to 0.1680 in five epochs (0.1868 with ``prompt_lr_scale=0.1``): the targets ahead are not
    the next item the retrieval is asked for. ``next`` is the default."""

    prompt_warmup_epochs: int = Field(0, ge=0)
    """``hadamard`` or ``hadamard_next``: epochs trained before the prompts switch on. Until
    then every position trains the shared encoder with its own cluster's negatives (the naive
    multi-task model, which the identity initialisation t_k = 1 makes exact), at SASRec cost
    per trained target; then the task prompts are tuned (with ``task_sampling`` for
    ``hadamard``). Early stopping's ``patience`` counts only rounds after the warm-up, so the
    prompts always train. 0 = prompts from the start."""

    prompt_lr_scale: float = Field(1.0, gt=0.0, le=1.0)
    """With ``prompt_warmup_epochs``: the learning rate after the warm-up is ``lr`` times this
    (the prompted epochs fine-tune a converged encoder). Measured once, 0.1 in row 6nls: it
    slowed that row's decline but did not turn it into a gain."""

    # ---- intent head and quota ----------------------------------------------------
    quota: Literal["equal", "intent", "score"] = "score"
    """``equal``: M/K candidates per cluster; ``intent``: M_k = M·p_uk^α / Σ_k' p_uk'^α;
    ``score``: no quota, all clusters' candidates ranked by log P(i | u) = log p_uk + the
    in-cluster log-softmax (the model's own factorisation; needs the intent head)."""
    alpha: float = Field(2.0, ge=0.0)
    """Sharpness of the intent quota (0 = equal quota). On the ml-1m-3k validation split the
    best of {0.25 … 8} was 2 for the in-cluster rows and 1 for SASRec+
    (``benchmarks/dnc_ebr_ml1m.py``)."""
    intent_input: Literal["items", "encoder", "task_state"] = "encoder"
    """What the intent head reads: ``items``, the item embeddings (the last item and the
    causal mean of the history; no encoder pass), or ``encoder``, the encoder's unprompted
    hidden state (the user features the retrieval reads; free with ``prompt="none"``, one
    more encoder pass per window and per served user with a prompt). ``encoder`` is the
    default: HR@20 0.4075 against 0.3868 (rows 4e, 4s) and p_uk's own quota (α = 1) 0.3925
    against 0.3628. ``task_state`` (with a prompt): the head reads the prompted state of each
    training row's own pass and, served, averages its probabilities over the K task vectors
    the retrieval computes anyway, so it costs no pass (without a prompt it is ``encoder``).
    In row 6slt (row 6sl with ``task_state``) the prompted epochs never beat the warm-up
    (validation NDCG@10 at most 0.1919 against 6sl's 0.1948; test HR@20 0.4031, the restored
    warm-up, against 0.4151) and cost 58-65 s against 6sl's 39-48 s, because each row's pass
    then runs over every position instead of only the trained ones."""
    intent_weight: float = Field(1.0, ge=0.0)
    """Weight of the intent head's cross-entropy (target's cluster) in the joint loss;
    0 trains no intent head (then p_uk is uniform and ``quota`` must be ``equal``)."""

    @model_validator(mode="after")
    def _check_combinations(self) -> DncEbrConfig:
        if self.negatives == "mixed" and self.loss == "softmax":
            raise ValueError("negatives='mixed' samples negatives: set loss to "
                             "'sampled_softmax' or 'bce'")
        if self.prompt_lr_scale != 1.0 and not self.prompt_warmup_epochs:
            raise ValueError("prompt_lr_scale applies after the warm-up: set prompt_warmup_epochs")
        if self.prompt_warmup_epochs and self.prompt not in ("hadamard", "hadamard_next"):
            raise ValueError("prompt_warmup_epochs needs prompt='hadamard' or 'hadamard_next' "
                             "(their t_k = 1 start is the unprompted encoder)")
        if self.prompt == "hadamard_next" and self.intent_input == "task_state":
            raise ValueError("prompt='hadamard_next' prompts every state with its target's "
                             "cluster: the intent head cannot read them (intent_input "
                             "'task_state'); use 'encoder' or 'items'")
        if self.prompt_targets != "next" and self.prompt in ("none", "hadamard_next"):
            raise ValueError("prompt_targets='next_in_task' needs a row-wide task: prompt "
                             "'hadamard' or 'prefix'")
        if self.quota in ("intent", "score") and self.intent_weight == 0:
            raise ValueError(f"quota={self.quota!r} needs a trained intent head (intent_weight > 0)")
        return self
