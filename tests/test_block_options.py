"""Activation checkpointing gives the same gradients; torch.compile the same losses (slow: compile time)."""
import pytest
import torch

from mmlm.distributed import apply_block_options
from mmlm.model import GPT, model_config


def _grads(mode: str):
    torch.manual_seed(0)
    model = GPT(model_config("nano", 200, 32))
    apply_block_options(model, activation_checkpointing=mode)
    x = torch.randint(0, 200, (3, 32), generator=torch.Generator().manual_seed(1))
    logits, _ = model(x)
    torch.nn.functional.cross_entropy(logits.view(-1, 200), x.roll(-1, 1).view(-1)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, set(model.state_dict())


def test_activation_checkpointing_gives_identical_gradients_and_keeps_names():
    ref, names = _grads("none")
    for mode in ("selective", "full"):
        got, got_names = _grads(mode)
        assert got_names == names  # checkpoints stay interchangeable
        for n in ref:
            torch.testing.assert_close(got[n], ref[n], rtol=0, atol=1e-7, msg=f"{mode}: {n}")
    # and a checkpointed model still decodes with a KV cache (checkpointing is skipped there)
    torch.manual_seed(0)
    model = GPT(model_config("pico", 200, 32)).eval()
    apply_block_options(model, activation_checkpointing="full")
    with torch.no_grad():
        cache = model.new_kv_cache(1)
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
    assert cache.pos == 3


@pytest.mark.slow
def test_compiled_training_matches_eager_over_20_steps(tmp_path):
    from mmlm.train import TrainConfig, train
    from test_train_data import make_root

    make_root(tmp_path / "data")
    base = dict(data=str(tmp_path / "data"), mix="text=1,image=1", size="pico", seq_len=32, batch_tokens=512,
                tokens=512 * 20, eval_tokens=256, threads=1)
    eager = train(TrainConfig(**base, out=str(tmp_path / "eager")))
    compiled = train(TrainConfig(**base, out=str(tmp_path / "compiled"), compile=True))
    import json

    def read(r):
        return [json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
    a, b = read("eager"), read("compiled")
    assert len(a) == len(b) == 20
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * abs(x)
    for k in eager["eval_loss"]:
        assert compiled["eval_loss"][k] == pytest.approx(eager["eval_loss"][k], rel=1e-4)
