"""The scale searches the K-quant quantizers share (kquants.md §3.4, §3.5; kquants-family.md
§3.1-§3.4): NumPy twins that run many groups at once, and the Numba versions the row
quantizers call (scalar, plus "lanes" versions that fit all groups of a row side by side;
make_qx_quants runs only as lanes: qx_lanes, its twin make_qx_quants_ref).

    make_qkx2_quants  fit x ~ scale*L + min (min <= 0) by weighted least squares over trial scales
    make_qkx3_quants  the same search; weights default to x*x (the imatrix paths pass their own)
    make_qx_quants    symmetric fit x ~ scale*l, l in -nmax..nmax-1; weights by rmse_type or qw
    make_q3_quants    Q3_K's symmetric fit: rounding, then up to 5 passes moving one l at a time
    make_qp_quants    non-negative fit x ~ scale*L, L in 0..nmax, with weights (super-block scales)
"""
import numpy as np

from ..jit import jit_exact
from .blocks import F32, argext, first_absmax, quiet, seq_sum
from .rounding import nearest_int, nearest_int_np

_F0 = F32(0.0)
_F1 = F32(1.0)
_EPS = F32(1e-15)  # GROUP_MAX_EPS
_F0_1 = F32(0.1)
_F32_32 = F32(32.0)

# ---------------------------------------------------------------------------------------------
# NumPy twins

@quiet
def make_qkx2_quants_ref(x, w, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool = False):
    """§3.4 over many sub-blocks at once: x, w (N, n) float32 -> (scale (N,), the_min (N,), L (N, n) uint8).

    Fits x ~ scale*L + min (min <= 0) by weighted least squares over nstep+1 trial scales;
    an accepted trial's min feeds the later trials, as in ggml. use_mad: the error of a trial
    is Σ w*|diff| instead of Σ w*diff² (Q2_K without an imatrix).
    """
    x = np.asarray(x, F32)
    w = np.asarray(w, F32)

    def err(diff):
        return np.abs(diff) if use_mad else diff * diff

    N, n = x.shape
    mn = argext(x, np.argmin)
    mx = argext(x, np.argmax)
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]
    mn = np.where(mn > 0, F32(0), mn).astype(F32)
    flat = mx == mn  # all zero or constant negative: L = 0, scale 0
    L = np.zeros((N, n), np.uint8)
    scale = np.zeros(N, F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rng = np.where(flat, F32(1), mx - mn).astype(F32)
        iscale = F32(nmax) / rng
        scale = F32(1) / iscale
        L = np.clip(nearest_int_np(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(np.uint8)
        diff = (scale[:, None] * L.astype(F32) + mn[:, None]) - x
        best_error = seq_sum(w * err(diff))
        for step in range(nstep + 1):
            rng = np.where(flat, F32(1), mx - mn).astype(F32)
            iscale = ((F32(rmin) + F32(rdelta) * F32(step)) + F32(nmax)) / rng
            laux = np.clip(nearest_int_np(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(np.uint8)
            lf = laux.astype(F32)
            wl = w * lf
            sum_l = seq_sum(wl)
            sum_l2 = seq_sum(wl * lf)
            sum_xl = seq_sum(wl * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            clamp = this_min > 0
            this_min = np.where(clamp, F32(0), this_min).astype(F32)
            this_scale = np.where(clamp, sum_xl / sum_l2, this_scale).astype(F32)
            diff = (this_scale[:, None] * lf + this_min[:, None]) - x
            cur_error = seq_sum(w * err(diff))
            accept = (D > 0) & (cur_error < best_error) & ~flat
            L = np.where(accept[:, None], laux, L)
            best_error = np.where(accept, cur_error, best_error)
            scale = np.where(accept, this_scale, scale)
            mn = np.where(accept, this_min, mn)
    L[flat] = 0
    scale = np.where(flat, F32(0), scale).astype(F32)
    return scale, (-mn).astype(F32), L


def make_qkx3_quants_ref(x, w, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool = False):
    """make_qkx3_quants (kquants-family.md §3.2) over many groups: make_qkx2_quants with weights
    x*x when w is None. (Its degenerate test `max <= min` equals qkx2's `max == min` on finite
    input, since min <= max.) -> (scale (N,), the_min (N,), L (N, n) uint8)."""
    x = np.asarray(x, F32)
    return make_qkx2_quants_ref(x, x * x if w is None else w, nmax, rmin, rdelta, nstep, use_mad)


def qx_weights(x: np.ndarray, rmse_type: int, qw=None) -> np.ndarray:
    """The weights of make_qx_quants: qw when given, else by rmse_type (1: x², 2: 1, 3: |x|, 4+: sqrt|x|)."""
    if qw is not None:
        return np.broadcast_to(np.asarray(qw, F32), x.shape)
    if rmse_type == 1:
        return x * x
    if rmse_type == 2:
        return np.ones_like(x)
    if rmse_type == 3:
        return np.abs(x)
    return np.sqrt(np.abs(x))


@quiet
def make_qx_quants_ref(x: np.ndarray, nmax: int, rmse_type: int = 1, qw=None):
    """§3.5 over many groups at once: x (N, n) -> (scale (N,), L (N, n) uint8).

    Symmetric fit x ~ scale*l, l in -nmax..nmax-1 (stored as l + nmax). rmse_type 0: plain
    rounding, scale 1/iscale; 1..4 (weights x², 1, |x|, sqrt|x|, or qw (n,) / (N, n) when
    given): 19 trial scales; negative: the first fit only, returned as the mean of the fitted
    and the rounding scale.
    """
    x = np.asarray(x, F32)
    amax, mx = first_absmax(x)
    tiny = amax < _EPS  # GROUP_MAX_EPS: L = 0 (not nmax), scale 0
    safe_max = np.where(tiny, F32(1), mx).astype(F32)

    def levels(iscale):
        return np.clip(nearest_int_np(iscale[:, None] * x), -nmax, nmax - 1)

    iscale = F32(-nmax) / safe_max
    if rmse_type == 0:
        L = (levels(iscale) + nmax).astype(np.uint8)
        L[tiny] = 0
        return np.where(tiny, F32(0), F32(1) / iscale).astype(F32), L
    early = rmse_type < 0
    w = qx_weights(x, abs(rmse_type), qw)

    def trial(iscale):
        l = levels(iscale)
        lf = l.astype(F32)
        return l, seq_sum((w * x) * lf), seq_sum((w * lf) * lf)

    l, sumlx, suml2 = trial(iscale)
    L = (l + nmax).astype(np.uint8)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
    if early:
        scale = np.where(suml2 > 0, F32(0.5) * (scale + F32(1) / iscale), F32(1) / iscale).astype(F32)
    else:
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            l, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / safe_max)
            accept = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(accept[:, None], (l + nmax).astype(np.uint8), L)
            scale = np.where(accept, sumlx / suml2, scale).astype(F32)
            best = np.where(accept, scale * sumlx, best).astype(F32)
    L[tiny] = 0
    return np.where(tiny, F32(0), scale).astype(F32), L


@quiet
def make_q3_quants_ref(x: np.ndarray, nmax: int, do_rmse: bool = True):
    """make_q3_quants (kquants-family.md §3.3) over many groups: x (N, n) -> (scale (N,), L (N, n) uint8).

    Rounds against -nmax/max, then (do_rmse) up to 5 passes that move one l at a time to the
    weighted least-squares optimum (weights x²), keeping a move only if it lowers the error.
    A pass that changes nothing leaves the state as it was, so running all 5 passes on every
    group gives what ggml's early exit gives.
    """
    x = np.asarray(x, F32)
    amax, mx = first_absmax(x)
    tiny = amax < _EPS
    safe_max = np.where(tiny, F32(1), mx).astype(F32)
    iscale = F32(-nmax) / safe_max
    L = np.clip(nearest_int_np(iscale[:, None] * x), -nmax, nmax - 1)
    if not do_rmse:
        L = (L + nmax).astype(np.uint8)
        L[tiny] = 0
        return np.where(tiny, F32(0), F32(1) / iscale).astype(F32), L
    w = x * x
    lf = L.astype(F32)
    sumlx = seq_sum((w * x) * lf)
    suml2 = seq_sum((w * lf) * lf)
    for _ in range(5):
        for i in range(x.shape[1]):
            wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F32)
            slx = sumlx - (wi * xi) * li
            sl2 = suml2 - (wi * li) * li
            new_l = np.clip(nearest_int_np((xi * sl2) / slx), -nmax, nmax - 1)
            nf = new_l.astype(F32)
            slx_n = slx + (wi * xi) * nf
            sl2_n = sl2 + (wi * nf) * nf
            accept = (slx > 0) & (new_l != L[:, i]) & (sl2_n > 0) & ((slx_n * slx_n) * suml2 > (sumlx * sumlx) * sl2_n)
            L[:, i] = np.where(accept, new_l, L[:, i])
            sumlx = np.where(accept, slx_n, sumlx).astype(F32)
            suml2 = np.where(accept, sl2_n, suml2).astype(F32)
    L = (L + nmax).astype(np.uint8)
    L[tiny] = 0
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(F32)
    return np.where(tiny, F32(0), scale).astype(F32), L


# ---------------------------------------------------------------------------------------------
# Numba


@jit_exact
def make_qkx2_quants(xr, base, w, L, lb, laux, nmax, rmin, rdelta, nstep, n, use_mad):
    """Fit x[base:base+n] ~ scale*L + min with weights w[0:n]; writes L[lb:lb+n]; returns
    (scale, -min). rmin, rdelta must be float32. use_mad: errors Σ w*|diff| (else w*diff²)."""
    mn = xr[base]
    mx = xr[base]
    sum_w = w[0]
    sum_x = sum_w * xr[base]
    for i in range(1, n):
        v = xr[base + i]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
        sum_w += w[i]
        sum_x += w[i] * v
    if mn > _F0:
        mn = _F0
    if mx == mn:
        for i in range(n):
            L[lb + i] = 0
        return _F0, -mn
    fnmax = F32(nmax)
    iscale = fnmax / (mx - mn)
    scale = _F1 / iscale
    best_error = _F0
    for i in range(n):
        v = xr[base + i]
        l = min(nmax, max(0, nearest_int(iscale * (v - mn))))
        L[lb + i] = l
        diff = scale * F32(l) + mn - v
        best_error += w[i] * (abs(diff) if use_mad else diff * diff)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F32(step) + fnmax) / (mx - mn)
        sum_l = _F0
        sum_l2 = _F0
        sum_xl = _F0
        for i in range(n):
            v = xr[base + i]
            l = min(nmax, max(0, nearest_int(iscale * (v - mn))))
            laux[i] = l
            wl = w[i] * F32(l)
            sum_l += wl
            sum_l2 += wl * F32(l)
            sum_xl += wl * v
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > _F0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > _F0:
                this_min = _F0
                this_scale = sum_xl / sum_l2
            cur_error = _F0
            for i in range(n):
                diff = this_scale * F32(laux[i]) + this_min - xr[base + i]
                cur_error += w[i] * (abs(diff) if use_mad else diff * diff)
            if cur_error < best_error:
                for i in range(n):
                    L[lb + i] = laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn


@jit_exact
def make_qkx3_quants(xr, base, w, L, lb, laux, nmax, rmin, rdelta, nstep, n, use_mad):
    """make_qkx3_quants (kquants-family.md §3.2): make_qkx2_quants, with weights x*x when w is
    empty (ggml's NULL). On finite input its `max <= min` test is qkx2's `max == min`."""
    if w.shape[0] != 0:
        return make_qkx2_quants(xr, base, w, L, lb, laux, nmax, rmin, rdelta, nstep, n, use_mad)
    ww = np.empty(n, np.float32)
    for i in range(n):
        ww[i] = xr[base + i] * xr[base + i]
    return make_qkx2_quants(xr, base, ww, L, lb, laux, nmax, rmin, rdelta, nstep, n, use_mad)


@jit_exact
def make_q3_quants(n, nmax, x, xo, L, lo, do_rmse):
    """Q3_K's fit (kquants-family.md §3.3) of x[xo:xo+n]; writes L[lo:lo+n] = l + nmax (0 for an
    all-zero group); returns scale. L must hold signed values while the passes run."""
    mx = _F0
    amax = _F0
    for i in range(n):
        ax = abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < _EPS:
        for i in range(n):
            L[lo + i] = 0
        return _F0
    iscale = -F32(nmax) / mx
    if not do_rmse:
        for i in range(n):
            L[lo + i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[xo + i])))
        return _F1 / iscale
    sumlx = _F0
    suml2 = _F0
    for i in range(n):
        v = x[xo + i]
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * v)))
        L[lo + i] = l
        w = v * v
        sumlx += w * v * F32(l)
        suml2 += w * F32(l) * F32(l)
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            v = x[xo + i]
            w = v * v
            li = F32(L[lo + i])
            slx = sumlx - w * v * li
            if slx > _F0:
                sl2 = suml2 - w * li * li
                new_l = max(-nmax, min(nmax - 1, nearest_int(v * sl2 / slx)))
                if new_l != L[lo + i]:
                    fl = F32(new_l)
                    slx = slx + w * v * fl
                    sl2 = sl2 + w * fl * fl
                    if sl2 > _F0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[lo + i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[lo + i] += nmax
    return sumlx / suml2 if suml2 > _F0 else _F0


# Speed: the trial fits are latency-bound chains of float32 sums when run one sub-block at
# a time. The sums of *different* sub-blocks are independent, so the fits below run all
# sub-blocks of a row side by side as SIMD lanes: arrays (32, N) with lane k = sub-block k,
# loops `for i: for k:` whose inner loop vectorises while each lane keeps ggml's exact
# left-to-right order. Integer rounding uses rint, equal to nearest_int for |v| < 2^22;
# a lane whose values could leave that range is redone with the scalar code above.

LIMIT = F32(2097152.0)  # 2^21


@jit_exact
def _lanes_guard(iscale, mn, mx, xmin, flat, bad, limit):
    """Flag lanes where iscale*(x - mn) may reach 2^21 (or is NaN): extremes bound it (monotone)."""
    for k in range(iscale.shape[0]):
        a = abs(iscale[k] * (mx[k] - mn[k]))
        b = abs(iscale[k] * (xmin[k] - mn[k]))
        ok = a < limit and b < limit
        bad[k] = bad[k] if ok or flat[k] != _F0 else _F1


@jit_exact
def qkx2_lanes(xt, wt, nmax, rmin, rdelta, nstep, use_mad, Lt, laux, st, limit):
    """make_qkx2_quants (§3.4) for N sub-blocks at once (use_mad as there).

    xt, wt: (n, N) values and weights, lane k = sub-block k. Writes Lt (n, N) (float L),
    st[0] scale, st[1] the_min (= -min), st[2] 1.0 for lanes the caller must redo exactly.
    """
    n, N = xt.shape
    scale, the_min, bad, flat = st[0], st[1], st[2], st[3]
    mn, mx, xmin, sum_w, sum_x, best = st[4], st[5], st[6], st[7], st[8], st[9]
    b_iscale, b_mn, iscale, sum_l, sum_l2, sum_xl = st[10], st[11], st[12], st[13], st[14], st[15]
    cur, this_scale, this_min, dd = st[16], st[17], st[18], st[19]
    fnmax = F32(nmax)
    for k in range(N):
        v = xt[0, k]
        mn[k] = v
        mx[k] = v
        sum_w[k] = wt[0, k]
        sum_x[k] = wt[0, k] * v
    for i in range(1, n):
        for k in range(N):
            v = xt[i, k]
            w = wt[i, k]
            mn[k] = v if v < mn[k] else mn[k]
            mx[k] = v if v > mx[k] else mx[k]
            sum_w[k] = sum_w[k] + w
            sum_x[k] = sum_x[k] + w * v
    for k in range(N):
        bad[k] = _F0
        xmin[k] = mn[k]
        mn[k] = _F0 if mn[k] > _F0 else mn[k]
        flat[k] = _F1 if mx[k] == mn[k] else _F0
        rng = mx[k] - mn[k] if flat[k] == _F0 else _F1  # flat lanes are settled at the end
        iscale[k] = fnmax / rng
        scale[k] = _F1 / iscale[k]
        best[k] = _F0
        b_iscale[k] = iscale[k]
        b_mn[k] = mn[k]
    _lanes_guard(iscale, mn, mx, xmin, flat, bad, limit)
    for i in range(n):
        for k in range(N):
            v = xt[i, k]
            l = min(fnmax, max(_F0, np.rint(iscale[k] * (v - mn[k]))))
            diff = scale[k] * l + mn[k] - v
            best[k] = best[k] + wt[i, k] * (abs(diff) if use_mad else diff * diff)
    for step in range(nstep + 1):
        top = rmin + rdelta * F32(step) + fnmax
        for k in range(N):
            rng = mx[k] - mn[k] if flat[k] == _F0 else _F1
            iscale[k] = top / rng
            sum_l[k] = _F0
            sum_l2[k] = _F0
            sum_xl[k] = _F0
            cur[k] = _F0
        _lanes_guard(iscale, mn, mx, xmin, flat, bad, limit)
        for i in range(n):
            for k in range(N):
                v = xt[i, k]
                l = min(fnmax, max(_F0, np.rint(iscale[k] * (v - mn[k]))))
                laux[i, k] = l
                wl = wt[i, k] * l
                sum_l[k] = sum_l[k] + wl
                sum_l2[k] = sum_l2[k] + wl * l
                sum_xl[k] = sum_xl[k] + wl * v
        for k in range(N):
            D = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k]
            ts = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / D
            tm = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / D
            clamp = tm > _F0
            this_min[k] = _F0 if clamp else tm
            this_scale[k] = sum_xl[k] / sum_l2[k] if clamp else ts
            dd[k] = D
        for i in range(n):
            for k in range(N):
                diff = this_scale[k] * laux[i, k] + this_min[k] - xt[i, k]
                cur[k] = cur[k] + wt[i, k] * (abs(diff) if use_mad else diff * diff)
        for k in range(N):
            if dd[k] > _F0 and cur[k] < best[k] and flat[k] == _F0:
                best[k] = cur[k]
                scale[k] = this_scale[k]
                b_iscale[k] = iscale[k]
                b_mn[k] = mn[k]
                mn[k] = this_min[k]
    # L of the last accepted trial, recomputed from the iscale and min that produced it
    for i in range(n):
        for k in range(N):
            l = min(fnmax, max(_F0, np.rint(b_iscale[k] * (xt[i, k] - b_mn[k]))))
            Lt[i, k] = _F0 if flat[k] != _F0 else l
    for k in range(N):
        the_min[k] = -mn[k]
        scale[k] = _F0 if flat[k] != _F0 else scale[k]


@jit_exact
def to_lanes(xr, xt):
    """Row -> (m, N) lanes: xt[i, k] = xr[m*k + i]."""
    m, N = xt.shape
    for k in range(N):
        for i in range(m):
            xt[i, k] = xr[m * k + i]


@jit_exact
def _qx_sums(xt, wt, iscale, nmax, sumlx, suml2):
    """One trial of make_qx_quants: l = clamp(rint(iscale*x), -nmax, nmax-1); weights wt, or
    x*x when wt is empty (rmse_type 1 without qw)."""
    n, N = xt.shape
    lo = F32(-nmax)
    hi = F32(nmax - 1)
    for k in range(N):
        sumlx[k] = _F0
        suml2[k] = _F0
    if wt.shape[0] == 0:
        for i in range(n):
            for k in range(N):
                v = xt[i, k]
                l = min(hi, max(lo, np.rint(iscale[k] * v)))
                w = v * v
                sumlx[k] = sumlx[k] + w * v * l
                suml2[k] = suml2[k] + w * l * l
    else:
        for i in range(n):
            for k in range(N):
                v = xt[i, k]
                l = min(hi, max(lo, np.rint(iscale[k] * v)))
                w = wt[i, k]
                sumlx[k] = sumlx[k] + w * v * l
                suml2[k] = suml2[k] + w * l * l


@jit_exact
def qx_lanes(xt, wt, nmax, Lt, st):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, qw) (§3.5) for N groups of n at once.

    xt (n, N), lane k = group k; wt (n, N) the weights qw, or an empty (0, 0) array for
    ggml's NULL (weights x*x). Writes Lt (n, N) (L = l + nmax, or 0 for an all-zero group)
    and st[0] scale. |iscale*x| <= nmax + 0.9 here, so rint equals nearest_int.
    """
    n, N = xt.shape
    scale, amax, mx, iscale, sumlx, suml2, best, b_iscale = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    fnmax = F32(nmax)
    for k in range(N):
        amax[k] = _F0
        mx[k] = _F0
    for i in range(n):
        for k in range(N):
            v = xt[i, k]
            take = abs(v) > amax[k]
            mx[k] = v if take else mx[k]
            amax[k] = abs(v) if take else amax[k]
    for k in range(N):
        mx[k] = mx[k] if amax[k] >= _EPS else _F1  # tiny lanes: L = 0, scale 0 (set below)
        iscale[k] = -fnmax / mx[k]
    _qx_sums(xt, wt, iscale, nmax, sumlx, suml2)
    for k in range(N):
        scale[k] = sumlx[k] / suml2[k] if suml2[k] != _F0 else _F0
        best[k] = scale[k] * sumlx[k]
        b_iscale[k] = iscale[k]
    for step in range(-9, 10):
        if step == 0:
            continue
        top = -(fnmax + _F0_1 * F32(step))
        for k in range(N):
            iscale[k] = top / mx[k]
        _qx_sums(xt, wt, iscale, nmax, sumlx, suml2)
        for k in range(N):
            if suml2[k] > _F0 and sumlx[k] * sumlx[k] > best[k] * suml2[k]:
                b_iscale[k] = iscale[k]
                scale[k] = sumlx[k] / suml2[k]
                best[k] = scale[k] * sumlx[k]
    lo = F32(-nmax)
    hi = F32(nmax - 1)
    for i in range(n):
        for k in range(N):
            l = min(hi, max(lo, np.rint(b_iscale[k] * xt[i, k])))
            Lt[i, k] = l + fnmax if amax[k] >= _EPS else _F0
    for k in range(N):
        scale[k] = scale[k] if amax[k] >= _EPS else _F0


# ---------------------------------------------------------------------------------------------
# make_qp_quants (kquants-family.md §3.2): a non-negative fit x ~ scale*L, L in 0..nmax, with
# weights; used on super-block scales (Q2_K with an imatrix, Q4_K/Q5_K with an imatrix) and
# as IQ2_XXS's initial scale.


@jit_exact
def make_qp_quants(n, nmax, x, xo, L, lo, w, wo):
    """Fit x[xo:xo+n] (>= 0) ~ scale * L[lo:lo+n] with weights w[wo:wo+n]; returns scale."""
    mx = _F0
    for i in range(n):
        mx = max(mx, x[xo + i])
    if mx < _EPS:
        for i in range(n):
            L[lo + i] = 0
        return _F0
    fnmax = F32(nmax)
    iscale = fnmax / mx
    for i in range(n):
        L[lo + i] = nearest_int(iscale * x[xo + i])
    scale = _F1 / iscale
    best_mse = _F0
    for i in range(n):
        diff = x[xo + i] - scale * F32(L[lo + i])
        best_mse += (w[wo + i] * diff) * diff
    for k in range(-4, 5):
        if k == 0:
            continue
        iscale_is = (_F0_1 * F32(k) + fnmax) / mx
        scale_is = _F1 / iscale_is
        mse = _F0
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[xo + i]))
            diff = x[xo + i] - scale_is * F32(l)
            mse += (w[wo + i] * diff) * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = _F0
    suml2 = _F0
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[xo + i]))
        L[lo + i] = l
        sumlx += (w[wo + i] * x[xo + i]) * F32(l)
        suml2 += (w[wo + i] * F32(l)) * F32(l)
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            wx = w[wo + i] * x[xo + i]
            li = F32(L[lo + i])
            slx = sumlx - wx * li
            sl2 = suml2 - (w[wo + i] * li) * li
            if slx > _F0 and sl2 > _F0:
                new_l = min(nmax, nearest_int((x[xo + i] * sl2) / slx))
                if new_l != L[lo + i]:
                    fl = F32(new_l)
                    slx = slx + wx * fl
                    sl2 = sl2 + (w[wo + i] * fl) * fl
                    if (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                        L[lo + i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > _F0 else _F0


def make_qp_quants_ref(nmax: int, x: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """NumPy twin of make_qp_quants for one group: x, w (n,) float32 -> (scale, L int64 (n,)).
    Written element by element from the spec, with float32 scalars: slow and obvious."""
    x = np.asarray(x, F32)
    w = np.asarray(w, F32)
    n = x.size
    mx = F32(0)
    for v in x:
        mx = max(mx, v)
    if mx < _EPS:
        return F32(0), np.zeros(n, np.int64)
    fnmax = F32(nmax)
    iscale = F32(fnmax / mx)
    L = nearest_int_np(iscale * x).astype(np.int64)
    scale = F32(F32(1) / iscale)
    best = F32(0)
    for i in range(n):
        diff = F32(x[i] - F32(scale * F32(L[i])))
        best = F32(best + F32(F32(w[i] * diff) * diff))
    for k in (-4, -3, -2, -1, 1, 2, 3, 4):
        isc = F32(F32(F32(0.1) * F32(k) + fnmax) / mx)
        sc = F32(F32(1) / isc)
        mse = F32(0)
        for i in range(n):
            l = min(nmax, int(nearest_int_np(F32(isc * x[i]))))
            diff = F32(x[i] - F32(sc * F32(l)))
            mse = F32(mse + F32(F32(w[i] * diff) * diff))
        if mse < best:
            best, iscale = mse, isc
    sumlx = suml2 = F32(0)
    for i in range(n):
        L[i] = min(nmax, int(nearest_int_np(F32(iscale * x[i]))))
        sumlx = F32(sumlx + F32(F32(w[i] * x[i]) * F32(L[i])))
        suml2 = F32(suml2 + F32(F32(w[i] * F32(L[i])) * F32(L[i])))
    for _ in range(5):
        changed = 0
        for i in range(n):
            wx = F32(w[i] * x[i])
            slx = F32(sumlx - F32(wx * F32(L[i])))
            sl2 = F32(suml2 - F32(F32(w[i] * F32(L[i])) * F32(L[i])))
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, int(nearest_int_np(F32(F32(x[i] * sl2) / slx))))
                if new_l != L[i]:
                    slx = F32(slx + F32(wx * F32(new_l)))
                    sl2 = F32(sl2 + F32(F32(w[i] * F32(new_l)) * F32(new_l)))
                    if F32(F32(slx * slx) * suml2) > F32(F32(sumlx * sumlx) * sl2):
                        L[i], sumlx, suml2 = new_l, slx, sl2
                        changed += 1
        if not changed:
            break
    return (F32(sumlx / suml2) if suml2 > 0 else F32(0)), L


@quiet
def make_qp_quants_rows_ref(nmax: int, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_qp_quants over many groups at once: x, w (N, n) float32 -> (scale (N,), L uint8 (N, n)).

    ggml stores L in uint8_t, so a negative level (possible only for a negative x) wraps
    modulo 256 where it is stored and read back; the sums use the int before it is stored.
    The Numba make_qp_quants does the same when its L is a uint8 array.
    """
    x = np.asarray(x, F32)
    w = np.asarray(w, F32)
    N, n = x.shape
    mx = np.zeros(N, F32)
    for i in range(n):
        mx = np.where(mx > x[:, i], mx, x[:, i]).astype(F32)  # MAX(max, x[i])
    tiny = mx < _EPS
    safe = np.where(tiny, F32(1), mx).astype(F32)
    fnmax = F32(nmax)

    def stored(l):
        return (l & 0xFF).astype(np.uint8)

    iscale = fnmax / safe
    L = stored(nearest_int_np(iscale[:, None] * x))
    scale = F32(1) / iscale
    diff = x - scale[:, None] * L.astype(F32)
    best = seq_sum((w * diff) * diff)
    for k in (-4, -3, -2, -1, 1, 2, 3, 4):
        isc = (F32(0.1) * F32(k) + fnmax) / safe
        sc = F32(1) / isc
        l = np.minimum(nmax, nearest_int_np(isc[:, None] * x))
        diff = x - sc[:, None] * l.astype(F32)
        mse = seq_sum((w * diff) * diff)
        better = mse < best
        best = np.where(better, mse, best).astype(F32)
        iscale = np.where(better, isc, iscale).astype(F32)
    l = np.minimum(nmax, nearest_int_np(iscale[:, None] * x))
    L = stored(l)
    lf = l.astype(F32)
    sumlx = seq_sum((w * x) * lf)
    suml2 = seq_sum((w * lf) * lf)
    for _ in range(5):  # a pass that changes nothing leaves the state as it was: no early exit needed
        for i in range(n):
            wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F32)
            wx = wi * xi
            slx = sumlx - wx * li
            sl2 = suml2 - (wi * li) * li
            new_l = np.minimum(nmax, nearest_int_np((xi * sl2) / slx))
            nf = new_l.astype(F32)
            slx_n = slx + wx * nf
            sl2_n = sl2 + (wi * nf) * nf
            accept = ((slx > 0) & (sl2 > 0) & (new_l != L[:, i].astype(np.int64))
                      & ((slx_n * slx_n) * suml2 > (sumlx * sumlx) * sl2_n))
            L[:, i] = np.where(accept, stored(new_l), L[:, i])
            sumlx = np.where(accept, slx_n, sumlx).astype(F32)
            suml2 = np.where(accept, sl2_n, suml2).astype(F32)
    L[tiny] = 0
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(F32)
    return np.where(tiny, F32(0), scale).astype(F32), L
