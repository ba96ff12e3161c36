"""The pair-law plot draws whatever the fit returns, including the degenerate laws the demo fitted."""
import numpy as np


def test_pair_plot_survives_a_tiny_exponent():
    """The demo's text|code fit came back with alpha = 3.6e-5 and C = A = 1933: the barrier's N is
    (A / C')^(1/alpha), far past any float; the plot clips it instead of raising OverflowError."""
    from mmlm.laws.bimodal import BimodalLaw
    from mmlm.laws.report import plot_pair
    from mmlm.laws.unimodal import UnimodalLaw

    uni = UnimodalLaw()
    uni._set(np.log([1.5, 50.0, 100.0]).tolist() + [0.3, 0.3], 0.0, 12)
    law = BimodalLaw(uni, uni)
    law._set(np.array([np.log(1933.0), np.log(1933.4), np.log(1e-13), 3.6e-5, 2.5]), 0.0, 8)
    N = np.array([4e4, 6e4, 1.1e5, 2.2e5] * 2)
    D = np.repeat([4e5, 8e5], 4)
    png = plot_pair("code|text", law, {"N": N, "Di": D / 2, "Dj": D / 2})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
