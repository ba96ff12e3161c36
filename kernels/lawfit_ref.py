"""Plain-Python twin of _lawfit.pyx: the scaling-law objective with its exact gradient, and the polish.

Same arithmetic, statement for statement, as the compiled kernel (tests/test_lawfit_kernel.py checks
they agree); slow (pure Python loops), so mmlm uses it only to check the kernel. The algorithm is
described in mmlm/laws/fitting.py.
"""
import math

import numpy as np

PRED_FLOOR = 1e-12


def objective_grad(theta, log_n, log_d, log_loss, base, sign, weights, delta, kind):
    """forms.objective of one theta, compiled, with its exact gradient (kind 0: Huber on log, 1: lsq)."""
    k, a, b, alpha, beta = theta[0], theta[1], theta[2], theta[3], theta[4]
    tk = math.exp(k)
    f = 0.0
    g = np.zeros(5)
    for i in range(log_n.shape[0]):
        w = weights[i]
        if w == 0.0:
            continue
        ta = math.exp(a - alpha * log_n[i])
        tb = math.exp(b - beta * log_d[i])
        pred = base[i] + sign * tk + ta + tb
        if kind == 1:
            r = pred - math.exp(log_loss[i])
            f += w * r * r
            q = 2.0 * w * r
        elif pred <= PRED_FLOOR:
            # flat (and large) here: a line search that steps in backs off
            r = math.log(PRED_FLOOR) - log_loss[i]
            f += w * delta * (abs(r) - 0.5 * delta)
            continue
        else:
            r = math.log(pred) - log_loss[i]
            if abs(r) <= delta:
                f += w * 0.5 * r * r
                q = w * r / pred
            else:
                f += w * delta * (abs(r) - 0.5 * delta)
                q = w * math.copysign(delta, r) / pred
        g[0] += q * sign * tk
        g[1] += q * ta
        g[2] += q * tb
        g[3] -= q * ta * log_n[i]
        g[4] -= q * tb * log_d[i]
    return f, g


def solve5(A, b):
    """Gaussian elimination with partial pivoting for the 5x5 step (no LAPACK: quick to compile)."""
    A = A.copy()
    x = b.copy()
    n = x.shape[0]
    for c in range(n):
        p = c
        for r in range(c + 1, n):
            if abs(A[r, c]) > abs(A[p, c]):
                p = r
        if p != c:
            for j in range(n):
                A[c, j], A[p, j] = A[p, j], A[c, j]
            x[c], x[p] = x[p], x[c]
        for r in range(c + 1, n):
            m = A[r, c] / A[c, c]
            for j in range(c, n):
                A[r, j] -= m * A[c, j]
            x[r] -= m * x[c]
    for c in range(n - 1, -1, -1):
        for j in range(c + 1, n):
            x[c] -= A[c, j] * x[j]
        x[c] /= A[c, c]
    return x


# One long function on purpose: it mirrors _lawfit.pyx's polish step by step (whose C loops cannot
# call out cheaply), so that the twin test compares the same algorithm.
def polish(theta0, log_n, log_d, log_loss, base, sign, weights, delta, lo, hi, max_iter, kind, tie, rel_tol=1e-15):
    """Iteratively reweighted Gauss-Newton with Levenberg-Marquardt damping, within the bounds.
    kind 1 (lsq) is plain Gauss-Newton on the loss; tie keeps alpha = beta (one step for both)."""
    theta = theta0.copy()
    if tie:
        theta[4] = theta[3]
    f, g = objective_grad(theta, log_n, log_d, log_loss, base, sign, weights, delta, kind)
    lam = 1e-3
    row = np.zeros(5)
    stall = 0
    for _ in range(max_iter):
        # Gauss-Newton matrix of the weighted least-squares majoriser of the Huber loss.
        H = np.zeros((5, 5))
        tk = math.exp(theta[0])
        for i in range(log_n.shape[0]):
            w = weights[i]
            if w == 0.0:
                continue
            ta = math.exp(theta[1] - theta[3] * log_n[i])
            tb = math.exp(theta[2] - theta[4] * log_d[i])
            pred = base[i] + sign * tk + ta + tb
            if kind == 1:
                u = 2.0 * w
                scale = 1.0
            else:
                if pred <= PRED_FLOOR:
                    continue
                r = math.log(pred) - log_loss[i]
                u = w if abs(r) <= delta else w * delta / abs(r)
                scale = 1.0 / pred
            row[0] = sign * tk * scale
            row[1] = ta * scale
            row[2] = tb * scale
            row[3] = -ta * log_n[i] * scale
            row[4] = -tb * log_d[i] * scale
            for a in range(5):
                for b in range(5):
                    H[a, b] += u * row[a] * row[b]
        gg = g.copy()
        if tie:  # one exponent e = alpha = beta: fold row/column 4 into 3, and hold 4
            for j in range(5):
                H[3, j] += H[4, j]
            for j in range(5):
                H[j, 3] += H[j, 4]
            gg[3] += gg[4]
        # A variable on a bound that the gradient pushes outward stays where it is.
        free = np.ones(5, dtype=np.bool_)
        for j in range(5):
            if (theta[j] <= lo[j] and gg[j] > 0) or (theta[j] >= hi[j] and gg[j] < 0):
                free[j] = False
        if tie:
            free[4] = False
        rel = 0.0
        improved = False
        while lam < 1e12:
            A = H.copy()
            rhs = -gg.copy()
            for j in range(5):
                A[j, j] += lam * H[j, j] + 1e-14 * (1.0 + H[j, j])
                if not free[j]:
                    A[j, :] = 0.0
                    A[:, j] = 0.0
                    A[j, j] = 1.0
                    rhs[j] = 0.0
            step = solve5(A, rhs)
            if tie:
                step[4] = step[3]
            new = np.minimum(np.maximum(theta + step, lo), hi)
            fn, gn = objective_grad(new, log_n, log_d, log_loss, base, sign, weights, delta, kind)
            if fn < f:
                rel = (f - fn) / f
                theta, f, g = new, fn, gn
                lam = max(lam * 0.2, 1e-12)
                improved = True
                break
            lam *= 5.0
        if not improved:
            break
        stall = stall + 1 if rel < rel_tol else 0
        if stall >= 3:
            break
    return theta, f
