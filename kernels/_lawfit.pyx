# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled scaling-law objective (with its exact gradient) and the Levenberg-Marquardt polish.

The plain-Python twin, line for line the same arithmetic, is kernels/lawfit_ref.py; the algorithm is
described there and in mmlm/laws/fitting.py. Ahead-of-time compiled (no JIT), so a single fit costs
milliseconds from a cold start.
"""
import numpy as np
from libc.math cimport exp, log, fabs, copysign

cdef double PRED_FLOOR = 1e-12


cdef double _objgrad(const double* th, const double[::1] log_n, const double[::1] log_d,
                     const double[::1] log_loss, const double[::1] base, double sign,
                     const double[::1] weights, double delta, int kind, double* g) noexcept nogil:
    cdef double k = th[0], a = th[1], b = th[2], alpha = th[3], beta = th[4]
    cdef double tk = exp(k), f = 0.0, w, ta, tb, pred, r, q
    cdef Py_ssize_t i, j
    for j in range(5):
        g[j] = 0.0
    for i in range(log_n.shape[0]):
        w = weights[i]
        if w == 0.0:
            continue
        ta = exp(a - alpha * log_n[i])
        tb = exp(b - beta * log_d[i])
        pred = base[i] + sign * tk + ta + tb
        if kind == 1:
            r = pred - exp(log_loss[i])
            f += w * r * r
            q = 2.0 * w * r
        elif pred <= PRED_FLOOR:
            r = log(PRED_FLOOR) - log_loss[i]
            f += w * delta * (fabs(r) - 0.5 * delta)
            continue
        else:
            r = log(pred) - log_loss[i]
            if fabs(r) <= delta:
                f += w * 0.5 * r * r
                q = w * r / pred
            else:
                f += w * delta * (fabs(r) - 0.5 * delta)
                q = w * copysign(delta, r) / pred
        g[0] += q * sign * tk
        g[1] += q * ta
        g[2] += q * tb
        g[3] -= q * ta * log_n[i]
        g[4] -= q * tb * log_d[i]
    return f


def objective_grad(theta, const double[::1] log_n, const double[::1] log_d, const double[::1] log_loss,
                   const double[::1] base, double sign, const double[::1] weights, double delta, int kind):
    """(objective, gradient (5,)) of one theta."""
    cdef double th[5]
    cdef double[::1] t = np.ascontiguousarray(theta, dtype=np.float64)
    cdef Py_ssize_t j
    for j in range(5):
        th[j] = t[j]
    g = np.zeros(5)
    cdef double[::1] gv = g
    f = _objgrad(th, log_n, log_d, log_loss, base, sign, weights, delta, kind, &gv[0])
    return f, g


cdef void _solve5(double* A, double* x) noexcept nogil:
    """Gaussian elimination with partial pivoting of the 5x5 A (row-major) x = rhs, in place."""
    cdef int n = 5, c, p, r, j
    cdef double m, tmp
    for c in range(n):
        p = c
        for r in range(c + 1, n):
            if fabs(A[r * 5 + c]) > fabs(A[p * 5 + c]):
                p = r
        if p != c:
            for j in range(n):
                tmp = A[c * 5 + j]; A[c * 5 + j] = A[p * 5 + j]; A[p * 5 + j] = tmp
            tmp = x[c]; x[c] = x[p]; x[p] = tmp
        for r in range(c + 1, n):
            m = A[r * 5 + c] / A[c * 5 + c]
            for j in range(c, n):
                A[r * 5 + j] -= m * A[c * 5 + j]
            x[r] -= m * x[c]
    for c in range(n - 1, -1, -1):
        for j in range(c + 1, n):
            x[c] -= A[c * 5 + j] * x[j]
        x[c] /= A[c * 5 + c]


# One long function on purpose: its inner loops are typed C (calls to Python helpers per iteration
# would cost what compiling saves), and lawfit_ref.polish mirrors it step by step for the twin test.
def polish(theta0, const double[::1] log_n, const double[::1] log_d, const double[::1] log_loss,
           const double[::1] base, double sign, const double[::1] weights, double delta,
           const double[::1] lo, const double[::1] hi, int max_iter, int kind, bint tie,
           double rel_tol=1e-15):
    """Iteratively reweighted Gauss-Newton with Levenberg-Marquardt damping, within the bounds; stops
    after 3 accepted steps in a row that each lower the objective by less than rel_tol (relative).
    Returns (theta (5,), objective)."""
    cdef double theta[5]
    cdef double g[5]
    cdef double gg[5]
    cdef double gn[5]
    cdef double new[5]
    cdef double row[5]
    cdef double H[25]
    cdef double A[25]
    cdef double step[5]
    cdef bint free[5]
    cdef double[::1] t0 = np.ascontiguousarray(theta0, dtype=np.float64)
    cdef Py_ssize_t i, j, aa, bb, it
    cdef double f, fn, lam = 1e-3, rel, w, tk, ta, tb, pred, r, u, scale
    cdef int stall = 0
    cdef bint improved
    for j in range(5):
        theta[j] = t0[j]
    if tie:
        theta[4] = theta[3]
    with nogil:
        f = _objgrad(theta, log_n, log_d, log_loss, base, sign, weights, delta, kind, g)
        for it in range(max_iter):
            for j in range(25):
                H[j] = 0.0
            tk = exp(theta[0])
            for i in range(log_n.shape[0]):
                w = weights[i]
                if w == 0.0:
                    continue
                ta = exp(theta[1] - theta[3] * log_n[i])
                tb = exp(theta[2] - theta[4] * log_d[i])
                pred = base[i] + sign * tk + ta + tb
                if kind == 1:
                    u = 2.0 * w
                    scale = 1.0
                else:
                    if pred <= PRED_FLOOR:
                        continue
                    r = log(pred) - log_loss[i]
                    u = w if fabs(r) <= delta else w * delta / fabs(r)
                    scale = 1.0 / pred
                row[0] = sign * tk * scale
                row[1] = ta * scale
                row[2] = tb * scale
                row[3] = -ta * log_n[i] * scale
                row[4] = -tb * log_d[i] * scale
                for aa in range(5):
                    for bb in range(5):
                        H[aa * 5 + bb] += u * row[aa] * row[bb]
            for j in range(5):
                gg[j] = g[j]
            if tie:
                for j in range(5):
                    H[3 * 5 + j] += H[4 * 5 + j]
                for j in range(5):
                    H[j * 5 + 3] += H[j * 5 + 4]
                gg[3] += gg[4]
            for j in range(5):
                free[j] = not ((theta[j] <= lo[j] and gg[j] > 0) or (theta[j] >= hi[j] and gg[j] < 0))
            if tie:
                free[4] = False
            rel = 0.0
            improved = False
            while lam < 1e12:
                for j in range(25):
                    A[j] = H[j]
                for j in range(5):
                    step[j] = -gg[j]
                for j in range(5):
                    A[j * 5 + j] += lam * H[j * 5 + j] + 1e-14 * (1.0 + H[j * 5 + j])
                    if not free[j]:
                        for aa in range(5):
                            A[j * 5 + aa] = 0.0
                            A[aa * 5 + j] = 0.0
                        A[j * 5 + j] = 1.0
                        step[j] = 0.0
                _solve5(A, step)
                if tie:
                    step[4] = step[3]
                for j in range(5):
                    new[j] = min(max(theta[j] + step[j], lo[j]), hi[j])
                fn = _objgrad(new, log_n, log_d, log_loss, base, sign, weights, delta, kind, gn)
                if fn < f:
                    rel = (f - fn) / f
                    for j in range(5):
                        theta[j] = new[j]
                        g[j] = gn[j]
                    f = fn
                    lam = max(lam * 0.2, 1e-12)
                    improved = True
                    break
                lam *= 5.0
            if not improved:
                break
            if rel < rel_tol:
                stall += 1
            else:
                stall = 0
            if stall >= 3:
                break
    out = np.empty(5)
    for j in range(5):
        out[j] = theta[j]
    return out, f
