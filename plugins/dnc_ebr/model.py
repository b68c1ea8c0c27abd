"""The ``dnc_ebr`` network: a shared sequence encoder, K task prompts and an intent head.

Task k (= item cluster k) adapts the encoder through its learnable vector t_k:

- ``hadamard``: the encoder reads ``[s_1 ⊙ t_k, …, s_n ⊙ t_k]`` (t_k starts at all
  ones, so the untrained model is plain SASRec);
- ``prefix``: t_k is prepended as an extra token every position attends to;
- ``hadamard_next`` (ours): item s_i is scaled by the prompt of the cluster of the item that
  followed it, s_i ⊙ t_{c(s_{i+1})}, and the last item by the task's, s_n ⊙ t_k. Training
  position i's task is its target's cluster, which is exactly its own prompt, so one causal
  pass trains every position under its task (the paper's form needs a pass per task);
  serving varies only the last position's prompt;
- ``none``: no prompt; one user vector serves every cluster (naive multi-task).

The intent head predicts p(next item's cluster | history), task-free, from either
the item embeddings (``intent_input="items"``: the causal mean and the last item, see
:class:`~recall_core.training.encoders.IntentHead`; no encoder pass), the encoder's
unprompted hidden state (``"encoder"``: a two-layer head on the same user features
the retrieval reads; with ``prompt="none"`` that state is the user vector itself), or,
with a prompt, the task-prompted states (``"task_state"``: trained on each training
row's own pass, served as the mean of its probabilities over the K task vectors the
retrieval computes anyway; no pass of its own).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from recall_core.native import torch as load_torch
from recall_core.training.encoders import EncoderSpec, IntentHead, SequenceEncoder, rows_at

torch = load_torch()
nn = torch.nn
Tensor = torch.Tensor
PROMPTS = ("none", "prefix", "hadamard", "hadamard_next")
HADAMARD = ("hadamard", "hadamard_next")  # t_k scales item embeddings; t_k = 1 is the identity
INTENT_INPUTS = ("items", "encoder", "task_state")


@dataclass(frozen=True)
class DncEbrSpec:
    encoder: EncoderSpec
    num_clusters: int  # K' actually used (after compaction)
    prompt: str = "hadamard"
    intent: bool = True  # False: no intent head, p_uk is uniform
    temperature: float = 1.0  # the loss's; retrieval normalises scores with it too
    intent_input: str = "items"  # what the intent head reads (artifacts before it: items)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DncEbrSpec:
        values = dict(values)
        return cls(encoder=EncoderSpec(**values.pop("encoder")), **values)


class DncEbrNet(nn.Module):
    """Encoder + task prompts + intent head; item vectors are the encoder's item embeddings."""

    def __init__(self, spec: DncEbrSpec) -> None:
        super().__init__()
        if spec.prompt not in PROMPTS:
            raise ValueError(f"unknown prompt {spec.prompt!r} (choose from {', '.join(PROMPTS)})")
        if spec.intent_input not in INTENT_INPUTS:
            raise ValueError(f"unknown intent_input {spec.intent_input!r} "
                             f"(choose from {', '.join(INTENT_INPUTS)})")
        self.spec = spec
        self.encoder = SequenceEncoder(spec.encoder)
        self.tasks = None
        if spec.prompt != "none":
            self.tasks = nn.Embedding(spec.num_clusters, spec.encoder.dim)
            with torch.no_grad():
                if spec.prompt in HADAMARD:
                    self.tasks.weight.fill_(1.0)  # identity prompt at the start
                else:
                    self.tasks.weight.normal_(0.0, 0.02)  # like an item embedding
        if spec.prompt == "hadamard_next":
            if spec.intent_input == "task_state":
                raise ValueError("prompt 'hadamard_next' gives every state its target's cluster "
                                 "as a prompt: an intent head cannot read those states")
            # The cluster of each input item (ids + 1; row 0 = padding), set with
            # set_clusters and stored with the weights.
            self.register_buffer("input_cluster", torch.zeros(spec.encoder.num_items + 1,
                                                              dtype=torch.long))
        self.intent: nn.Module | None = None
        if spec.intent:
            self.intent = (IntentHead(spec.encoder.dim, spec.num_clusters)
                           if spec.intent_input == "items"
                           else StateIntentHead(spec.encoder.dim, spec.num_clusters))

    def set_clusters(self, item_cluster: Any) -> None:
        """Record the item -> cluster map (``(N,)``) that ``hadamard_next`` prompts read."""
        with torch.no_grad():
            self.input_cluster[1:] = torch.as_tensor(item_cluster, dtype=torch.long)

    @property
    def next_prompted(self) -> bool:
        """Whether each position carries its own prompt (``hadamard_next``): one pass trains
        every position under its task."""
        return self.spec.prompt == "hadamard_next"

    @property
    def task_dependent(self) -> bool:
        """Whether the user vector depends on the task (a prompt is used)."""
        return self.tasks is not None

    def item_vectors(self) -> Tensor:
        return self.encoder.item_vectors()  # (N, d)

    def hidden(self, inputs: Tensor, task: Tensor | None = None) -> Tensor:
        """Hidden states ``(B, T, d)`` of ``inputs`` ``(B, T)`` under task ``task``: ``(B,)``,
        or ``(B, T)`` per position for ``hadamard_next`` (each position's target cluster)."""
        return self.encoder(inputs, **self._prompt_hooks(task))

    def user_vectors(self, inputs: Tensor, lengths: Tensor, task: Tensor | None = None) -> Tensor:
        """User vectors ``(B, d)``: the hidden state at each row's last real position."""
        if self.next_prompted and task is not None:
            task = self.next_clusters(inputs, lengths, task)
        return self.encoder.encode_last(inputs, lengths, **self._prompt_hooks(task))

    def next_clusters(self, inputs: Tensor, lengths: Tensor, task: Tensor) -> Tensor:
        """Per-position prompts ``(B, T)`` of a history: the cluster of the item after each
        position, and ``task`` ``(B,)`` at the last real one (padding reads cluster 0)."""
        following = torch.cat([inputs[:, 1:], torch.zeros_like(inputs[:, :1])], dim=1)
        clusters = self.input_cluster[following]  # (B, T)
        last = (lengths - 1).clamp(min=0)[:, None]
        return clusters.scatter(1, last, task[:, None])

    def _prompt_hooks(self, task: Tensor | None) -> dict[str, Any]:
        """The encoder hooks that apply task ``task``'s prompt (none without prompts)."""
        if self.tasks is None:
            return {}
        if task is None:
            raise ValueError("a prompted model needs the task (cluster) of every row")
        prompt = self.tasks(task)  # (B, d), or (B, T, d) for per-position tasks
        if self.spec.prompt in HADAMARD:
            scale = prompt if prompt.dim() == 3 else prompt[:, None, :]
            return {"input_transform": lambda e: e * scale}
        return {"prefix": prompt[:, None, :]}  # (B, 1, d) prefix token

    @property
    def intent_reads_encoder(self) -> bool:
        """Whether the intent head reads the encoder's unprompted hidden state."""
        if self.intent is None or self.spec.intent_input == "items":
            return False
        return self.spec.intent_input == "encoder" or not self.task_dependent

    @property
    def intent_reads_task_state(self) -> bool:
        """Whether the intent head reads the task-prompted states (``"task_state"`` with a
        prompt; without one the unprompted state is the only state, as for ``"encoder"``)."""
        return (self.intent is not None and self.spec.intent_input == "task_state"
                and self.task_dependent)

    def intent_logits(self, inputs: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Cluster logits ``(B, T, K)`` at every position (requires the intent head).

        ``hidden``: the states ``(B, T, d)`` a state head reads, when the caller has them
        (else the unprompted pass is computed here; a ``"task_state"`` head is given its
        row's prompted pass, or the unprompted one while the prompts are the identity).
        """
        if self.intent is None:
            raise ValueError("this model was trained without an intent head")
        if self.spec.intent_input == "items":
            return self.intent(self.encoder.item_embedding(inputs))
        return self.intent(self.encoder(inputs) if hidden is None else hidden)

    def intent_probabilities(self, inputs: Tensor, lengths: Tensor,
                             last_hidden: Tensor | None = None) -> Tensor:
        """p_uk ``(B, K)`` after each row's last real position (uniform without a head).

        ``last_hidden``: the unprompted state ``(B, d)`` at that position, if known (with
        ``prompt="none"`` it is the user vector: an ``"encoder"`` head then costs no pass).
        """
        if self.intent_reads_task_state:
            raise ValueError("this intent head reads the task states: use intent_from_task_states")
        if self.intent is None:  # full_like keeps the batch size dynamic in a serving trace
            uniform = torch.full_like(lengths, 1, dtype=torch.float32) / self.spec.num_clusters
            return uniform[:, None].expand(-1, self.spec.num_clusters)
        if self.intent_reads_encoder:
            state = (self.encoder.encode_last(inputs, lengths) if last_hidden is None
                     else last_hidden)
            return torch.softmax(self.intent(state), dim=-1)
        logits = rows_at(self.intent_logits(inputs), (lengths - 1).clamp(min=0))
        return torch.softmax(logits, dim=-1)

    def intent_from_task_states(self, states: Tensor) -> Tensor:
        """p_uk ``(Q, K)`` of a ``"task_state"`` head from the K task vectors ``(Q, K, d)``:
        the mean of the head's distribution under each task (each was trained to be one)."""
        if not self.intent_reads_task_state:
            raise ValueError("this model's intent head does not read the task states")
        return torch.softmax(self.intent(states), dim=-1).mean(dim=1)

    def shared_rows(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """``[p_u1..p_uK, v_u]`` ``(B, K + d)`` of an unprompted model, from one encoder pass
        (an ``"encoder"`` intent head reads the user vector itself)."""
        shared = self.user_vectors(inputs, lengths)
        return torch.cat([self.intent_probabilities(inputs, lengths, shared), shared], dim=1)


class StateIntentHead(nn.Module):
    """Cluster logits from encoder states: ``(…, d) -> (…, K)`` through one GELU layer."""

    def __init__(self, dim: int, groups: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, groups)

    def forward(self, states: Tensor) -> Tensor:
        return self.out(torch.nn.functional.gelu(self.hidden(states)))
