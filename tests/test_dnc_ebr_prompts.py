"""``dnc_ebr`` training: the prompts, task sampling, targets, intent inputs and warm-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recall_core.contract import TrainContext
from recall_core.progress import SilentProgress

FAST = {"dim": 16, "max_len": 20, "epochs": 2, "batch_size": 32, "layers": 1, "patience": 1,
        "clusters": 4, "item2vec_epochs": 1, "kmeans_iterations": 5}


# ---- prompts and task sampling ------------------------------------------------------
@pytest.mark.parametrize("prompt", ["hadamard", "hadamard_next", "prefix", "none"])
def test_prompts_change_the_user_vector_per_task(prompt: str) -> None:
    import torch

    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec

    torch.manual_seed(0)
    spec = DncEbrSpec(EncoderSpec(30, 8, 16, 1, prefix_tokens=int(prompt == "prefix")), 3, prompt)
    net = DncEbrNet(spec).eval()
    if net.tasks is not None:
        torch.nn.init.normal_(net.tasks.weight, 1.0, 0.5)  # trained prompts differ per task
    inputs, lengths = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]]), torch.tensor([3, 4])
    with torch.no_grad():
        vectors = [net.user_vectors(inputs, lengths, torch.full((2,), k)) for k in range(3)]
        probabilities = net.intent_probabilities(inputs, lengths)
    differs = not torch.allclose(vectors[0], vectors[1]) and not torch.allclose(vectors[1], vectors[2])
    assert differs == (prompt != "none")
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2))


@pytest.mark.parametrize("prompt", ["hadamard", "hadamard_next", "none"])
def test_encoder_intent_reads_the_unprompted_last_state(prompt: str) -> None:
    import torch

    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec

    torch.manual_seed(0)
    spec = DncEbrSpec(EncoderSpec(30, 8, 16, 1), 3, prompt, intent_input="encoder")
    net = DncEbrNet(spec).eval()
    inputs, lengths = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]]), torch.tensor([3, 4])
    with torch.no_grad():
        p = net.intent_probabilities(inputs, lengths)
        if net.tasks is not None:  # the prompts do not enter the intent
            torch.nn.init.normal_(net.tasks.weight, 1.0, 0.5)
        again = net.intent_probabilities(inputs, lengths)
        state = net.encoder.encode_last(inputs, lengths)
        every_position = net.intent_logits(inputs)[torch.arange(2), lengths - 1]
    torch.testing.assert_close(p, again)
    torch.testing.assert_close(p, torch.softmax(net.intent(state), -1))
    torch.testing.assert_close(p, torch.softmax(every_position, -1))
    if prompt == "none":  # there the state is the user vector: passing it skips the pass
        torch.testing.assert_close(p, net.intent_probabilities(
            inputs, lengths, net.user_vectors(inputs, lengths)))


@pytest.mark.parametrize(("intent_input", "reaches_blocks"), [("items", False), ("encoder", True)])
def test_intent_loss_trains_the_encoder_only_when_it_reads_it(intent_input: str,
                                                              reaches_blocks: bool) -> None:
    import torch

    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec

    net = DncEbrNet(DncEbrSpec(EncoderSpec(30, 8, 16, 1), 3, "none", intent_input=intent_input))
    net.intent_logits(torch.tensor([[3, 4, 5, 0]])).sum().backward()
    block = net.encoder.blocks[0].ffn.up.weight.grad
    assert (block is not None and bool(block.abs().sum() > 0)) == reaches_blocks
    assert net.encoder.item_embedding.weight.grad is not None


def test_artifacts_without_intent_input_load_as_item_intent() -> None:
    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.model import DncEbrSpec

    stored = DncEbrSpec(EncoderSpec(30, 8, 16, 1), 3).to_dict()
    stored.pop("intent_input")  # as written before the key existed
    assert DncEbrSpec.from_dict(stored).intent_input == "items"
    with pytest.raises(ValueError, match="intent_input"):
        from recall_plugins.dnc_ebr.model import DncEbrNet

        DncEbrNet(DncEbrSpec(EncoderSpec(30, 8, 16, 1), 3, intent_input="ids"))


def test_task_sampling_one_and_all() -> None:
    import torch

    from recall_plugins.dnc_ebr.train import pick_tasks

    target_cluster = torch.tensor([[0, 0, 2, -1], [1, 1, 1, 1], [2, 0, -1, -1]])
    lengths = torch.tensor([3, 4, 2])
    rows, tasks = pick_tasks(target_cluster, lengths, "all", 3, torch.Generator())
    assert sorted(zip(rows.tolist(), tasks.tolist())) == [(0, 0), (0, 2), (1, 1), (2, 0), (2, 2)]
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        rows, tasks = pick_tasks(target_cluster, lengths, "one", 3, generator)
        assert rows.tolist() == [0, 1, 2]
        seen |= set(zip(rows.tolist(), tasks.tolist()))
    assert seen == {(0, 0), (0, 2), (1, 1), (2, 0), (2, 2)}  # only clusters of real targets



def test_next_in_task_aims_each_position_at_the_next_item_of_the_rows_cluster() -> None:
    import torch

    from recall_plugins.dnc_ebr.train import next_in_task

    targets = torch.tensor([[5, 6, 7, 8, -1], [1, 2, 3, -1, -1]])
    target_cluster = torch.tensor([[0, 1, 0, 2, -1], [1, 1, 0, -1, -1]])
    aimed, mask = next_in_task(targets, target_cluster, torch.tensor([0, 1]))
    assert mask.tolist() == [[True, True, True, False, False], [True, True, False, False, False]]
    assert aimed[mask].tolist() == [5, 7, 7, 1, 2]  # row 0 task 0: 5, then 7 twice


def test_task_state_intent_trains_on_the_rows_own_single_pass() -> None:
    import torch

    from recall_core.training.batching import SequenceBatch
    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.config import DncEbrConfig
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec
    from recall_plugins.dnc_ebr.train import make_loss, make_step

    torch.manual_seed(0)
    item_cluster = np.arange(12) % 3
    config = DncEbrConfig(prompt="hadamard", task_sampling="one", intent_input="task_state",
                          prompt_targets="next_in_task")
    net = DncEbrNet(DncEbrSpec(EncoderSpec(12, 6, 8, 1), 3, "hadamard",
                               intent_input="task_state"))
    passes = []
    net.encoder.register_forward_hook(lambda *_: passes.append(1))
    step = make_step(net, make_loss(config, np.ones(12), item_cluster), item_cluster, config)
    inputs = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 0]])
    targets = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, -1, -1, -1]])
    loss, trained = step(SequenceBatch(inputs, targets, torch.tensor([6, 3]), torch.tensor([0, 1])))
    loss.backward()
    assert len(passes) == 1  # one prompted pass per window, for both heads
    assert 2 <= trained <= 9  # each row's positions before its task's last target
    assert net.intent.out.weight.grad.abs().sum() > 0 and net.tasks.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="task states"):
        net.intent_probabilities(inputs, torch.tensor([6, 3]))
    with pytest.raises(ValueError, match="needs a row-wide task"):
        DncEbrConfig(prompt="none", prompt_targets="next_in_task")


@pytest.mark.parametrize("groups", [1, 2, 3, 8])
def test_prompted_states_cut_after_the_last_target_equal_the_full_pass(groups: int) -> None:
    import torch

    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec
    from recall_plugins.dnc_ebr.train import prompted_states

    torch.manual_seed(0)
    net = DncEbrNet(DncEbrSpec(EncoderSpec(12, 6, 8, 2), 3, "hadamard")).eval()
    with torch.no_grad():
        net.tasks.weight.normal_()  # distinct prompts, so a task mix-up would show
        inputs = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 0], [11, 12, 1, 0, 0, 0]])
        targets = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, -1, -1, -1], [0, 1, -1, -1, -1, -1]])
        tasks = torch.tensor([0, 2, 1])
        mask = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]).bool()
        states, positives = prompted_states(net, inputs, targets, tasks, mask, groups)
        full = net.hidden(inputs, tasks)  # (R, T, d), uncut
    expected_rows = sorted(range(3), key=lambda r: int(mask[r].nonzero().max()))  # by length
    expected = torch.cat([full[r][mask[r]] for r in expected_rows])
    torch.testing.assert_close(states, expected)
    assert positives.tolist() == [t for r in expected_rows for t in targets[r][mask[r]].tolist()]


def test_prompt_lr_scale_takes_effect_when_the_prompts_switch_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recall_core.data.synthetic import SyntheticConfig, generate
    from recall_plugins.dnc_ebr import train as dnc_train
    from recall_plugins.dnc_ebr.config import DncEbrConfig

    seen: dict[str, object] = {}

    def fake_fit(net, batches, step, validate, settings, progress, **options):  # noqa: ANN001,ANN003,ANN202
        optimizer = options["optimizer"]
        for epoch in (1, 2, 3, 4):
            batches(epoch)
            seen[f"lr{epoch}"] = optimizer.param_groups[0]["lr"]
        raise RuntimeError("stop here")

    monkeypatch.setattr(dnc_train, "fit", fake_fit)
    config = DncEbrConfig(**{**FAST, "prompt": "hadamard", "prompt_warmup_epochs": 2,
                             "prompt_lr_scale": 0.1, "lr": 0.01})
    dataset = generate(SyntheticConfig(users=40, items=30, seed=2))
    with pytest.raises(RuntimeError, match="stop here"):
        dnc_train.train(config, dataset, TrainContext(tmp_path, SilentProgress(), threads=1))
    assert [seen[f"lr{e}"] for e in (1, 2, 3, 4)] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ValueError, match="prompt_warmup_epochs"):
        DncEbrConfig(prompt="hadamard", prompt_lr_scale=0.5)


def test_next_prompts_train_every_position_in_one_pass_as_serving_computes_it() -> None:
    """hadamard_next: a training pass prompts each position with its target's cluster; the
    served user vector for task k of the history up to that position is the same state."""
    import torch

    from recall_core.training.batching import SequenceBatch
    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.config import DncEbrConfig
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec
    from recall_plugins.dnc_ebr.train import make_loss, make_step

    torch.manual_seed(0)
    item_cluster = np.random.default_rng(0).integers(0, 3, 30)
    net = DncEbrNet(DncEbrSpec(EncoderSpec(30, 8, 16, 2), 3, "hadamard_next",
                               intent_input="encoder"))
    net.set_clusters(item_cluster)
    torch.nn.init.normal_(net.tasks.weight, 1.0, 0.5)
    inputs = torch.tensor([[5, 9, 3, 12, 7, 0, 0, 0]])  # ids + 1; its targets follow it
    targets = torch.tensor([[8, 2, 11, 6, 20, -1, -1, -1]])  # the last one lies past the window
    task = torch.from_numpy(item_cluster)[targets.clamp(min=0)]
    net.eval()
    with torch.no_grad():
        states = net.hidden(inputs, task)  # (1, 8, d): one pass
        for at in range(5):
            served = net.user_vectors(inputs[:, : at + 1], torch.tensor([at + 1]), task[:, at])
            torch.testing.assert_close(served[0], states[0, at])
    config = DncEbrConfig(prompt="hadamard_next")
    step = make_step(net.train(), make_loss(config, np.ones(30), item_cluster), item_cluster,
                     config)
    loss, trained = step(SequenceBatch(inputs, targets, torch.tensor([5]), torch.tensor([0])))
    loss.backward()
    assert trained == 5 and net.tasks.weight.grad.abs().sum() > 0  # every position, prompted
    with pytest.raises(ValueError, match="task_state"):
        DncEbrConfig(prompt="hadamard_next", intent_input="task_state")
    with pytest.raises(ValueError, match="row-wide"):  # its tasks are per position already
        DncEbrConfig(prompt="hadamard_next", prompt_targets="next_in_task")


def test_prompt_warmup_trains_the_shared_encoder_on_every_position_first() -> None:
    import torch

    from recall_core.training.batching import SequenceBatch
    from recall_core.training.encoders import EncoderSpec
    from recall_plugins.dnc_ebr.config import DncEbrConfig
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec
    from recall_plugins.dnc_ebr.train import make_loss, make_step

    torch.manual_seed(0)
    item_cluster = np.arange(12) % 3
    config = DncEbrConfig(prompt="hadamard", prompt_warmup_epochs=1,
                          task_sampling="one")  # one task per window
    net = DncEbrNet(DncEbrSpec(EncoderSpec(12, 6, 8, 1), 3, "hadamard"))
    phase = {"epoch": 1}
    step = make_step(net, make_loss(config, np.ones(12), item_cluster), item_cluster, config, phase)
    inputs = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 0]])
    targets = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, -1, -1, -1]])
    batch = SequenceBatch(inputs, targets, torch.tensor([6, 3]), torch.tensor([0, 1]))
    loss, trained = step(batch)
    loss.backward()
    assert trained == 9 and net.tasks.weight.grad is None  # every target, no prompt yet
    phase["epoch"] = 2
    loss, trained = step(batch)
    loss.backward()
    assert trained < 9 and net.tasks.weight.grad.abs().sum() > 0  # prompts tuned from now on
    with pytest.raises(ValueError, match="hadamard"):
        DncEbrConfig(prompt="prefix", prompt_warmup_epochs=2)
