"""Quality measures of image tokenizers (mmlm.tokenizers.image_quality) on planted cases."""
import math

import numpy as np

from test_vqvae import blobs

from mmlm.tokenizers.image_quality import code_usage, evaluate, psnr, ssim


def test_code_usage_on_planted_counts():
    # 4 of 16 codes drawn equally often: usage 1/4, perplexity 4
    u = code_usage(np.repeat([0, 3, 7, 9], 25), 16)
    assert u["usage"] == 0.25 and math.isclose(u["perplexity"], 4.0)
    # one code 3/4 of the time, another 1/4: perplexity exp(H) with H the entropy
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    u = code_usage(np.array([1, 1, 1, 2]), 4)
    assert u["usage"] == 0.5 and math.isclose(u["perplexity"], math.exp(h))


def test_psnr_and_ssim_on_planted_images():
    x = np.zeros((2, 12, 12, 3))
    y = x + 0.1  # MSE 0.01: 20 dB
    np.testing.assert_allclose(psnr(x, y), [20.0, 20.0])
    np.testing.assert_allclose(ssim(x, x), [1.0, 1.0])
    # flat images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.5, 0.01 ** 2
    np.testing.assert_allclose(ssim(np.full((1, 12, 12, 3), a), np.full((1, 12, 12, 3), b)),
                               [(2 * a * b + c1) / (a * a + b * b + c1)], rtol=1e-9)
    rng = np.random.default_rng(0)
    img = rng.random((1, 16, 16, 3))
    small, large = [ssim(img, np.clip(img + rng.normal(0, s, img.shape), 0, 1))[0] for s in (0.02, 0.2)]
    assert 1 > small > large


def test_evaluate_measures_the_kmeans_tokenizer_too():
    from mmlm.tokenizers.image import ImageTokenizer, reconstruction_error

    images = blobs(10)
    km = ImageTokenizer.train(images, size=8, patch=2, codebook=8)
    rep = evaluate(km, images)
    assert rep["codes_per_image"] == 16 and rep["bits_per_image"] == 48
    assert math.isclose(rep["psnr"], float(np.mean([10 * np.log10(1 / reconstruction_error(km, [im])) for im in images])),
                        abs_tol=1e-3)
