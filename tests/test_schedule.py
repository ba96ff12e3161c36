"""WSD learning rates, and a cooldown branch from a trunk's branch point is the separately trained run."""
import json

import pytest

from mmlm import schedule
from mmlm.errors import MmlmError
from mmlm.train import MIN_LR_SHARE, TrainConfig, check, lr_at, train
from test_train_data import make_root


def test_wsd_shape_and_the_default_schedule_is_unchanged():
    peak, warmup, steps = 1e-3, 10, 100
    lrs = [schedule.wsd_lr(s, peak, warmup, steps, 0.2) for s in range(steps)]
    assert lrs[0] == pytest.approx(peak / warmup) and lrs[warmup - 1] == pytest.approx(peak)
    assert all(lr == peak for lr in lrs[warmup:80]) and schedule.decay_start(steps, 0.2) == 80
    assert all(a > b for a, b in zip(lrs[79:], lrs[80:]))  # strictly decaying
    assert lrs[-1] == pytest.approx(MIN_LR_SHARE * peak)
    # the default (linear) schedule: decay starts right after warm-up
    assert lr_at(50, peak, warmup, steps) == pytest.approx(peak * (0.1 + 0.9 * (1 - 40 / 90)))
    # WSD until its decay does not depend on the run's length: what branching relies on
    for s in range(0, 80):
        assert schedule.wsd_lr(s, peak, warmup, steps, 0.2) == schedule.wsd_lr(s, peak, warmup, 400, 0.2)


def test_branch_plan_saves_compute():
    b = 1000
    plan = schedule.branch_plan([8 * b, b, 2 * b, 4 * b], batch_tokens=b // 10, decay_frac=0.2)
    assert plan["trunk"] == 8 * b and plan["branch_steps"] == {b: 8, 2 * b: 16, 4 * b: 32}
    assert plan["tokens_separate"] == 15 * b and plan["tokens_branched"] == 8 * b + 0.2 * 7 * b
    assert 1 - plan["tokens_branched"] / plan["tokens_separate"] >= 0.3


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    make_root(r)
    return r


def _cfg(root, out, steps, **kw):
    base = dict(data=str(root), out=str(out), mix="text=1,image=1", size="pico", seq_len=32, batch_tokens=512,
                tokens=512 * steps, eval_tokens=256, threads=1, schedule="wsd", warmup=2, stall_tokens=0, eval_every=5)
    return TrainConfig(**{**base, **kw})


def test_cooldown_branch_equals_the_separate_wsd_run(root, tmp_path):
    k = schedule.decay_start(10, 0.2)  # the 10-step budget decays from update 8
    trunk = train(_cfg(root, tmp_path / "trunk", 20, keep_steps=str(k)))
    point = schedule.branch_point(tmp_path / "trunk", k)
    assert point.is_dir() and trunk["status"] == "done"
    branch = train(_cfg(root, tmp_path / "branch", 10, branch_from=str(point)))
    alone = train(_cfg(root, tmp_path / "alone", 10))
    assert branch["eval_loss"] == alone["eval_loss"] and branch["tokens_by_dataset"] == alone["tokens_by_dataset"]
    assert (tmp_path / "branch" / "model.safetensors").read_bytes() == (tmp_path / "alone" / "model.safetensors").read_bytes()
    def lines(r):
        return [{k: v for k, v in json.loads(x).items() if not k.startswith("speed/")}
                           for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines("branch")] == list(range(1, 11))  # the trunk's first k steps, then its own
    assert [m["loss"] for m in lines("branch")] == [m["loss"] for m in lines("alone")]
    assert lines("branch")[:k] == lines("trunk")[:k]
    # a branch folder is an ordinary run: resuming the finished branch changes nothing
    again = train(_cfg(root, tmp_path / "branch", 10, branch_from=str(point), resume=True))
    assert again["eval_loss"] == branch["eval_loss"]


def test_bad_schedule_options_are_one_line_errors(root, tmp_path):
    with pytest.raises(MmlmError, match="--schedule 'cosine'"):
        check(_cfg(root, tmp_path / "x", 10, schedule="cosine"))
    with pytest.raises(MmlmError, match="--decay-frac 1.5"):
        check(_cfg(root, tmp_path / "x", 10, decay_frac=1.5))
    with pytest.raises(MmlmError, match="--warmup 9: longer than the stable phase"):
        check(_cfg(root, tmp_path / "x", 10, warmup=9))
    with pytest.raises(MmlmError, match="--keep-steps: step 12"):
        check(_cfg(root, tmp_path / "x", 10, keep_steps="4,12"))
    with pytest.raises(MmlmError, match="not a branch point"):
        train(_cfg(root, tmp_path / "y", 10, branch_from=str(tmp_path)))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
