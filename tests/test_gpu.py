"""`pytest -m gpu` (bench/gpu_check.sh runs these on a CUDA machine): a bf16 training run with MFU, FSDP2
in one process. Skipped without CUDA."""
import os

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_bf16_training_on_cuda_logs_a_sane_mfu(tmp_path):
    from mmlm.train import TrainConfig, train
    from test_train_data import make_root

    make_root(tmp_path / "data")
    s = train(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "r"), mix="text=1,image=1", size="micro",
                          seq_len=64, batch_tokens=4096, tokens=4096 * 10, eval_tokens=1024, device="cuda"))
    assert s["status"] == "done" and all(v is not None and v < 6 for v in s["eval_loss"].values())
    assert 0 < s["mfu"] <= 1 and s["peak_flops"] > 1e12


def test_fsdp2_one_process_trains_a_step():
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from mmlm.model import GPT, model_config

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = GPT(model_config("micro", 512, 64)).cuda()
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, 512, (4, 64), device="cuda")
        losses = []
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x.roll(-1, 1).flatten())
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < losses[0]
    finally:
        dist.destroy_process_group()
