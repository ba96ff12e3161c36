"""Caption-conditioned digit scoring: the judge, the accuracy of planted samples, caption labels, unigram baselines."""
import numpy as np
import pytest

from mmlm.data import unigram_entropy
from mmlm.digits import _label, judge_rows, train_judge


def sklearn_digits():
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = [np.asarray(Image.fromarray((x * 255 / 16).astype(np.uint8)).resize((32, 32)).convert("RGB")) for x in d.images]
    return imgs, d.target


def test_judge_scores_planted_samples():
    """Real digits as 'samples' in their own rows score high; the same images one row off score near zero;
    chance is 1/10 and n counts every image."""
    imgs, labels = sklearn_digits()
    train = np.arange(len(labels)) % 5 != 0
    judge, held_out = train_judge([imgs[i] for i in np.flatnonzero(train)], labels[train])
    assert held_out > 0.85
    test = np.flatnonzero(~train)
    rows = [[imgs[i] for i in test if labels[i] == k][:6] for k in range(10)]
    right = judge_rows(judge, rows)
    assert right["n"] == 60 and right["chance"] == 0.1 and right["accuracy"] > 0.8
    wrong = judge_rows(judge, rows[1:] + rows[:1])  # row k holds images of k + 1
    assert wrong["accuracy"] < 0.15
    assert len(right["per_digit"]) == 10


@pytest.mark.parametrize("caption, label", [("a handwritten digit 7", 7), ("handwritten three", 3),
                                            ("an 8 by 8 pixel image of a 5", 5), ("the number zero in white on black", 0),
                                            ("a cat", None)])
def test_caption_labels(caption, label):
    assert _label(caption) == label


def test_unigram_entropy_of_planted_distributions():
    assert unigram_entropy(np.full(100, 3)) == 0.0
    assert unigram_entropy(np.arange(64)) == pytest.approx(np.log(64))
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.25, 0.25])
    x = rng.choice(3, size=200_000, p=p)
    assert unigram_entropy(x) == pytest.approx(-(p * np.log(p)).sum(), rel=2e-3)
