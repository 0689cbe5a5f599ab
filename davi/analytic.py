"""Priors whose posteriors are known exactly: Gaussians and Gaussian mixtures on images.

Samplers (DAVI, RED-Diff, DDPM/DDIM) only see a prior through ``eps(x_t, t)``. For a Gaussian
prior ``x0 ~ N(m, S)`` the diffused marginal is ``x_t ~ N(sqrt(ab) m, ab S + (1 - ab) I)``, so the
ideal noise prediction is available in closed form::

    E[eps | x_t] = -sqrt(1 - ab) * score(x_t) = sqrt(1 - ab) (ab S + (1 - ab) I)^{-1} (x_t - sqrt(ab) m),

and with a linear measurement ``y = A x0 + sigma n`` the posterior is Gaussian too (Kalman form
below). A mixture of Gaussians keeps both properties componentwise (responsibilities computed in
log space). These stand-ins let tests and the benchmark check that a sampler converges to the
right answer, with no network error in the way.

Conventions:

* images are ``(B, C, H, W)``; a prior's ``mean`` is stored flat, shape ``(D,)`` with
  ``D = C * H * W`` in row-major (``x.reshape(B, D)``) order, ``cov`` is ``(D, D)``;
* everything is precomputed in float64; ``eps`` accepts float16/32/64 inputs on any device,
  computes in float64 (float32 on MPS, which has no float64) and returns the input's dtype;
* the covariance is eigendecomposed once (``S = V diag(lam) V^T``), so one ``eps`` call is two
  ``(B, D) x (D, D)`` matmuls: use these priors for small images (D up to a few thousand);
* like :class:`~davi.prior.DiffusionPrior`, ``eps`` runs without autograd (the prior is frozen);
  ``eps_with_grad`` keeps the graph through ``x_t``.

Posteriors and metrics (``exact_posterior``, ``gaussian_w2``, ...) work on the CPU in float64 and
return float64 CPU tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from davi.prior import ScorePrior, Schedule

__all__ = [
    "GaussianPrior",
    "GaussianMixturePrior",
    "fit_gaussian",
    "fit_gmm",
    "digit_images",
    "operator_matrix",
    "exact_posterior",
    "exact_posterior_gmm",
    "gaussian_w2",
    "sliced_wasserstein",
    "variance_ratios",
    "mode_coverage",
]

_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _f64(x) -> torch.Tensor:
    """x as a float64 CPU tensor; Python numbers go straight to float64 (not through float32)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, (list, tuple)) or not x or not \
            isinstance(x[0], torch.Tensor) else torch.stack([_f64(v) for v in x])
    return x.detach().to(device="cpu", dtype=torch.float64)


def _default_alphas_cumprod():
    """alpha_bar of the default DDPM schedule (SPEC 1) and its diffusers scheduler."""
    from davi.config import PriorConfig
    from davi.prior import build_scheduler

    scheduler = build_scheduler(PriorConfig())
    return scheduler.alphas_cumprod, scheduler


def _scheduler_for(alphas_cumprod: torch.Tensor):
    """A DDPMScheduler on a given alpha_bar (betas recovered from its ratios)."""
    from diffusers import DDPMScheduler

    ab = _f64(alphas_cumprod)
    betas = 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
    return DDPMScheduler(num_train_timesteps=len(ab), trained_betas=betas.float().numpy(), clip_sample=False)


def _image_shape(shape, dim: int) -> tuple[int, int, int]:
    if shape is None:
        raise ValueError("shape=(C, H, W) is required when the mean is given flat")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    if math.prod(shape) != dim:
        raise ValueError(f"shape {shape} holds {math.prod(shape)} values, the mean has {dim}")
    return shape


def _full_cov(dim: int, cov_factor=None, cov_diag=None, cov=None) -> torch.Tensor:
    """Sigma as a (D, D) float64 matrix, from ``cov`` or from ``cov_factor @ cov_factor.T + diag(cov_diag)``."""
    if cov is not None:
        if cov_factor is not None or cov_diag is not None:
            raise ValueError("give either cov, or cov_factor and/or cov_diag, not both")
        S = _f64(cov)
        if S.shape != (dim, dim):
            raise ValueError(f"cov must be ({dim}, {dim}), got {tuple(S.shape)}")
        if not torch.allclose(S, S.T, rtol=1e-6, atol=1e-10 * float(S.abs().max().clamp_min(1.0))):
            raise ValueError("cov must be symmetric")
        return 0.5 * (S + S.T)
    if cov_factor is None and cov_diag is None:
        raise ValueError("a covariance is needed: cov, or cov_factor and/or cov_diag")
    S = torch.zeros(dim, dim, dtype=torch.float64)
    if cov_factor is not None:
        U = _f64(cov_factor)
        if U.ndim == 1:
            U = U[:, None]
        if U.ndim != 2 or U.shape[0] != dim:
            raise ValueError(f"cov_factor must be ({dim}, rank), got {tuple(U.shape)}")
        S = S + U @ U.T
    if cov_diag is not None:
        d = _f64(cov_diag).reshape(-1)
        if d.numel() == 1:
            d = d.expand(dim)
        if d.shape != (dim,):
            raise ValueError(f"cov_diag must have {dim} entries, got {tuple(d.shape)}")
        if (d < 0).any():
            raise ValueError("cov_diag must be >= 0")
        S = S + torch.diag(d)
    return S


def _eig(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped at 0: Sigma is PSD up to rounding) and eigenvectors of a symmetric matrix."""
    lam, V = torch.linalg.eigh(S)
    if lam.min() < -1e-8 * max(float(lam.max()), 1.0):
        raise ValueError(f"the covariance is not positive semi-definite (smallest eigenvalue {float(lam.min()):.3g})")
    return lam.clamp_min(0), V


def _timesteps(t, batch: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device).long()
    if t.ndim == 0:
        t = t.expand(batch)
    t = t.reshape(-1)
    if t.shape[0] == 1 and batch != 1:
        t = t.expand(batch)
    if t.shape[0] != batch:
        raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class _AnalyticPrior(ScorePrior):
    """Shared plumbing: schedule, image geometry, device following, input checks."""

    def _init_common(self, shape, alphas_cumprod, identity: str) -> None:
        if alphas_cumprod is None:
            alphas_cumprod, scheduler = _default_alphas_cumprod()
        else:
            scheduler = _scheduler_for(alphas_cumprod)
        self.scheduler = scheduler
        self.schedule = Schedule(_f64(alphas_cumprod))
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape)
        self.channels = self.shape[0]
        self.resolution = self.shape[1]  # H (the images are square in this project)
        self.identity = identity
        self.digest = ""

    def train(self, mode: bool = True):  # frozen, like DiffusionPrior
        return super().train(False)

    def _follow(self, x: torch.Tensor) -> torch.dtype:
        """Move the buffers to x's device (once); return the dtype the math runs in."""
        buf = self.schedule.alphas_cumprod
        if buf.device != x.device:
            self.to(x.device)
        return _work_dtype(x.device)

    def _prepare(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        """(x flat (B, D) in the work dtype, alpha_bar (B, 1), work dtype)."""
        if x_t.ndim != 4 or tuple(x_t.shape[1:]) != self.shape:
            raise ValueError(f"{self.identity}: expects images of shape (B, {', '.join(map(str, self.shape))}), "
                             f"got {tuple(x_t.shape)}")
        dtype = self._follow(x_t)
        B = x_t.shape[0]
        t = _timesteps(t, B, x_t.device)
        ab = self.schedule.alphas_cumprod[t].to(dtype)[:, None]
        return x_t.reshape(B, -1).to(dtype), ab, dtype

    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.eps_with_grad(x_t, t)

    def eps_with_grad(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, ab, dtype = self._prepare(x_t, t)
        return self._eps_flat(x, ab, dtype).reshape(x_t.shape).to(x_t.dtype)

    def log_prob(self, x_t: torch.Tensor, t=None) -> torch.Tensor:
        """log density ``(B,)`` of the diffused prior at ``t`` (``t=None``: the clean prior itself)."""
        if t is None:
            x, dtype = self._prepare(x_t, 0)[0], _work_dtype(x_t.device)
            ab = torch.ones(x.shape[0], 1, dtype=dtype, device=x.device)
        else:
            x, ab, dtype = self._prepare(x_t, t)
        return self._log_prob_flat(x, ab, dtype).to(x_t.dtype if x_t.is_floating_point() else dtype)


class GaussianPrior(_AnalyticPrior):
    """``x0 ~ N(mean, Sigma)`` on ``(C, H, W)`` images, as a :class:`~davi.prior.ScorePrior`.

    Sigma is given as a full matrix (``cov``) or as low-rank-plus-diagonal
    ``cov_factor @ cov_factor.T + diag(cov_diag)`` (either part may be left out). ``mean`` is
    ``(C, H, W)`` or flat ``(D,)`` (then ``shape`` is required). The schedule is the default DDPM
    one (T = 1000, linear betas 1e-4 .. 0.02) unless ``alphas_cumprod`` is given.
    Buffers: ``mean`` (D,), ``cov`` (D, D), ``eigvals`` (D,), ``eigvecs`` (D, D), all float64.
    """

    def __init__(self, mean, cov_factor=None, cov_diag=None, cov=None, shape=None, alphas_cumprod=None,
                 identity: str | None = None):
        super().__init__()
        m = _f64(mean)
        shape = tuple(m.shape) if (shape is None and m.ndim == 3) else _image_shape(shape, m.numel())
        m = m.reshape(-1)
        S = _full_cov(m.numel(), cov_factor, cov_diag, cov)
        lam, V = _eig(S)
        self._init_common(shape, alphas_cumprod, identity or f"gaussian:dim={m.numel()}")
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("cov", S, persistent=False)
        self.register_buffer("eigvals", lam, persistent=False)
        self.register_buffer("eigvecs", V, persistent=False)
        self.register_buffer("_mean_eig", V.T @ m, persistent=False)  # V^T m

    def _terms(self, x, ab, dtype):
        V = self.eigvecs.to(dtype)
        z = x @ V - ab.sqrt() * self._mean_eig.to(dtype)  # V^T (x - sqrt(ab) m), (B, D)
        den = ab * self.eigvals.to(dtype) + (1 - ab)  # eigenvalues of ab Sigma + (1 - ab) I
        return z, den, V

    def _eps_flat(self, x, ab, dtype):
        z, den, V = self._terms(x, ab, dtype)
        return (1 - ab).sqrt() * ((z / den) @ V.T)

    def _log_prob_flat(self, x, ab, dtype):
        z, den, _ = self._terms(x, ab, dtype)
        return -0.5 * ((z * z / den).sum(1) + den.log().sum(1) + self.dim * _LOG_2PI)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` clean samples ``(n, C, H, W)``, float64 on the CPU."""
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        V, lam, m = self.eigvecs.cpu(), self.eigvals.cpu(), self.mean.cpu()
        return (m + (z * lam.sqrt()) @ V.T).reshape(n, *self.shape)


class GaussianMixturePrior(_AnalyticPrior):
    """``x0 ~ sum_k w_k N(m_k, Sigma_k)`` on ``(C, H, W)`` images, as a ScorePrior.

    ``weights`` (K,) (normalised here), ``means`` (K, C, H, W) or (K, D) with ``shape``; the
    covariances as ``covs`` (K, D, D), or ``cov_factors`` (K, D, r) and/or ``cov_diags`` (K, D).
    ``eps = sum_k r_k(x_t) eps_k(x_t)`` with responsibilities
    ``r_k ∝ w_k N(x_t; sqrt(ab) m_k, ab Sigma_k + (1 - ab) I)`` (softmax of log densities).
    Buffers: ``weights`` (K,), ``means`` (K, D), ``covs``, ``eigvecs`` (K, D, D), ``eigvals`` (K, D).
    """

    def __init__(self, weights, means, covs=None, cov_factors=None, cov_diags=None, shape=None,
                 alphas_cumprod=None, identity: str | None = None):
        super().__init__()
        w = _f64(weights).reshape(-1)
        M = _f64(means)
        K = w.numel()
        if M.shape[0] != K:
            raise ValueError(f"{K} weights but {M.shape[0]} means")
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        shape = tuple(M.shape[1:]) if (shape is None and M.ndim == 4) else _image_shape(shape, M[0].numel())
        M = M.reshape(K, -1)
        D = M.shape[1]

        def pick(v, k):
            return None if v is None else v[k]

        S = torch.stack([_full_cov(D, pick(cov_factors, k), pick(cov_diags, k), pick(covs, k)) for k in range(K)])
        eig = [_eig(S[k]) for k in range(K)]
        lam = torch.stack([e[0] for e in eig])
        V = torch.stack([e[1] for e in eig])
        self._init_common(shape, alphas_cumprod, identity or f"gmm:k={K},dim={D}")
        self.num_components = K
        self.component_labels: tuple[int, ...] | None = None  # set by fit_gmm (e.g. digit classes)
        self.register_buffer("weights", w / w.sum(), persistent=False)
        self.register_buffer("means", M, persistent=False)
        self.register_buffer("covs", S, persistent=False)
        self.register_buffer("eigvals", lam, persistent=False)
        self.register_buffer("eigvecs", V, persistent=False)
        self.register_buffer("_means_eig", torch.einsum("kde,kd->ke", V, M), persistent=False)  # V_k^T m_k

    @classmethod
    def from_components(cls, weights, components: Sequence[GaussianPrior], identity: str | None = None):
        """A mixture of GaussianPriors (their shape and schedule; all must agree)."""
        first = components[0]
        for c in components[1:]:
            if c.shape != first.shape or not torch.equal(c.schedule.alphas_cumprod.cpu(),
                                                         first.schedule.alphas_cumprod.cpu()):
                raise ValueError("mixture components must share their image shape and schedule")
        return cls(weights, torch.stack([c.mean.cpu() for c in components]),
                   covs=torch.stack([c.cov.cpu() for c in components]), shape=first.shape,
                   alphas_cumprod=first.schedule.alphas_cumprod.cpu(), identity=identity)

    def component(self, k: int) -> GaussianPrior:
        """Component ``k`` as a GaussianPrior (same schedule)."""
        return GaussianPrior(self.means[k].cpu(), cov=self.covs[k].cpu(), shape=self.shape,
                             alphas_cumprod=self.schedule.alphas_cumprod.cpu())

    def _terms(self, x, ab, dtype):
        V = self.eigvecs.to(dtype)  # (K, D, D)
        z = torch.einsum("bd,kde->bke", x, V) - ab.sqrt()[:, :, None] * self._means_eig.to(dtype)  # (B, K, D)
        den = ab[:, :, None] * self.eigvals.to(dtype) + (1 - ab)[:, :, None]
        logp = -0.5 * ((z * z / den).sum(2) + den.log().sum(2) + self.dim * _LOG_2PI)  # (B, K)
        return z, den, V, logp + self.weights.to(dtype).log()

    def responsibilities(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """r_k(x_t), shape (B, K)."""
        x, ab, dtype = self._prepare(x_t, t)
        return torch.softmax(self._terms(x, ab, dtype)[3], dim=1)

    def _eps_flat(self, x, ab, dtype):
        z, den, V, logw = self._terms(x, ab, dtype)
        r = torch.softmax(logw, dim=1)
        return (1 - ab).sqrt() * torch.einsum("bk,bke,kde->bd", r, z / den, V)

    def _log_prob_flat(self, x, ab, dtype):
        return torch.logsumexp(self._terms(x, ab, dtype)[3], dim=1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               return_labels: bool = False):
        """``n`` clean samples ``(n, C, H, W)`` (float64, CPU); with ``return_labels`` also their components."""
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        V, lam, M = self.eigvecs.cpu()[k], self.eigvals.cpu()[k], self.means.cpu()[k]
        x = (M + torch.einsum("nde,ne->nd", V, z * lam.sqrt())).reshape(n, *self.shape)
        return (x, k) if return_labels else x


# ----------------------------------------------------------------------------------------------
# fitting to images
# ----------------------------------------------------------------------------------------------
def _lowrank_fit(X: torch.Tensor, rank: int, min_var: float):
    """(mean, factor (D, rank), diag (D,)) of a PCA + per-pixel residual variance fit to X (N, D)."""
    N, D = X.shape
    if N < 2:
        raise ValueError(f"need at least 2 images to fit a covariance, got {N}")
    if not 0 <= rank <= min(N - 1, D):
        raise ValueError(f"rank must be in [0, {min(N - 1, D)}] for {N} images of {D} values, got {rank}")
    m = X.mean(0)
    Xc = X - m
    var = Xc.pow(2).sum(0) / (N - 1)
    if rank:
        _, s, Vh = torch.linalg.svd(Xc, full_matrices=False)
        U = Vh[:rank].T * (s[:rank] / math.sqrt(N - 1))  # top principal directions, scaled by their std
    else:
        U = torch.zeros(D, 0, dtype=torch.float64)
    resid = (var - U.pow(2).sum(1)).clamp_min(min_var)
    return m, U, resid


def fit_gaussian(images: torch.Tensor, rank: int, min_var: float = 1e-4, alphas_cumprod=None) -> GaussianPrior:
    """Low-rank-plus-diagonal Gaussian fit to ``images`` (N, C, H, W).

    Sigma = U U^T + diag(d): U holds the top-``rank`` principal components scaled by their standard
    deviations, d the per-pixel variance they leave unexplained, floored at ``min_var`` (constant
    pixels, such as digit borders, would otherwise get zero variance).
    """
    images = _f64(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    m, U, d = _lowrank_fit(images.reshape(images.shape[0], -1), rank, min_var)
    return GaussianPrior(m.reshape(images.shape[1:]), cov_factor=U, cov_diag=d, alphas_cumprod=alphas_cumprod,
                         identity=f"gaussian:dim={m.numel()},rank={rank}")


def _kmeans(X: torch.Tensor, k: int, generator: torch.Generator | None, iters: int = 100) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; returns labels (N,)."""
    N = X.shape[0]
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, {N}], got {k}")
    centers = [X[torch.randint(N, (1,), generator=generator)].squeeze(0)]
    for _ in range(1, k):
        d2 = torch.cdist(X, torch.stack(centers)).pow(2).min(1).values
        centers.append(X[torch.multinomial(d2 / d2.sum(), 1, generator=generator)].squeeze(0))
    C = torch.stack(centers)
    labels = torch.cdist(X, C).argmin(1)
    for _ in range(iters):
        C = torch.stack([X[labels == j].mean(0) if (labels == j).any() else C[j] for j in range(k)])
        new = torch.cdist(X, C).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def fit_gmm(images: torch.Tensor, labels_or_k, rank: int, min_var: float = 1e-4,
            generator: torch.Generator | None = None, alphas_cumprod=None) -> GaussianMixturePrior:
    """A Gaussian mixture fit to ``images`` (N, C, H, W), one low-rank-plus-diagonal component per group.

    ``labels_or_k``: class labels (N,) (e.g. digit classes; one component per distinct label, in
    sorted order, weighted by its share of the images) or an int k (groups found by k-means,
    seeded by ``generator``). The components' labels are kept as ``prior.component_labels``.
    """
    images = _f64(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    X = images.reshape(images.shape[0], -1)
    if isinstance(labels_or_k, int):
        labels = _kmeans(X, labels_or_k, generator)
    else:
        labels = torch.as_tensor(labels_or_k).reshape(-1).long().cpu()
        if labels.numel() != X.shape[0]:
            raise ValueError(f"{labels.numel()} labels for {X.shape[0]} images")
    classes = torch.unique(labels)
    fits = [_lowrank_fit(X[labels == c], rank, min_var) for c in classes]
    weights = torch.stack([(labels == c).sum() for c in classes]).double()
    prior = GaussianMixturePrior(
        weights, torch.stack([f[0] for f in fits]).reshape(len(classes), *images.shape[1:]),
        cov_factors=[f[1] for f in fits], cov_diags=[f[2] for f in fits], alphas_cumprod=alphas_cumprod,
        identity=f"gmm:k={len(classes)},dim={X.shape[1]},rank={rank}")
    prior.component_labels = tuple(int(c) for c in classes)
    return prior


def digit_images(classes: Sequence[int] = (0, 1), resolution: int = 8, split: str = "train",
                 per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled digits of ``classes``, area-downsampled from 32 px to ``resolution``.

    Returns (images (N, 1, r, r) float64 in [-1, 1], labels (N,)); ``per_class`` keeps the first
    that many of each class.
    """
    from davi.config import DataConfig
    from davi.data import load_split

    ds = load_split(DataConfig(), split)
    labels = ds.labels()
    idx = []
    for c in classes:
        where = torch.nonzero(labels == int(c)).flatten().tolist()
        if not where:
            raise ValueError(f"no digits of class {c} in the {split} split")
        idx += where[:per_class] if per_class else where
    x = torch.stack([ds[i]["image"] for i in idx]).double()
    if x.shape[-1] % resolution == 0:
        x = F.avg_pool2d(x, x.shape[-1] // resolution)
    else:
        x = F.interpolate(x, size=(resolution, resolution), mode="area")
    return x, labels[idx]


# ----------------------------------------------------------------------------------------------
# exact posteriors
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def operator_matrix(op, shape, chunk: int = 1024) -> torch.Tensor:
    """The (M, D) matrix of a linear operator on images of ``shape`` (C, H, W), float64 on the CPU,
    obtained by applying ``op`` to the identity basis (column j = A e_j)."""
    shape = tuple(int(s) for s in shape)
    D = math.prod(shape)
    cols = []
    for start in range(0, D, chunk):
        n = min(chunk, D - start)
        E = torch.zeros(n, D, dtype=torch.float64)
        E[torch.arange(n), start + torch.arange(n)] = 1
        cols.append(op(E.reshape(n, *shape)).reshape(n, -1).to(device="cpu", dtype=torch.float64))
    return torch.cat(cols).T.contiguous()


def _observed(op, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """A restricted to its non-zero rows, and the mask of those rows (M,). Identically zero rows
    (inpainting's unobserved pixels) carry no information and, with sigma_y = 0, would make
    A Sigma A^T + sigma^2 I singular: they are dropped."""
    A = operator_matrix(op, shape)
    keep = A.abs().amax(1) > 0
    return A[keep], keep


def _flat_measurement(op, y: torch.Tensor, shape) -> torch.Tensor:
    if y.ndim == 4:
        op.check_measurement(y, (y.shape[0], *shape))
    return _f64(y).reshape(y.shape[0], -1)


def _psd_solve(S: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S^{-1} R, log det S) for a symmetric PSD S (Cholesky; pseudo-inverse if it is singular)."""
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) == 0:
        return torch.cholesky_solve(R, L), 2 * L.diagonal().log().sum()
    lam, V = torch.linalg.eigh(S)
    tol = lam.max().clamp_min(0) * S.shape[0] * torch.finfo(S.dtype).eps
    inv = torch.where(lam > tol, 1 / lam, torch.zeros_like(lam))
    logdet = torch.where(lam > tol, lam, torch.ones_like(lam)).log().sum()
    return (V * inv) @ (V.T @ R), logdet


def _kalman(m: torch.Tensor, S: torch.Tensor, A: torch.Tensor, sigma: float, y: torch.Tensor):
    """Posterior (means (B, D), cov (D, D)) and log N(y; A m, A S A^T + sigma^2 I) (B,) of one Gaussian."""
    M = A.shape[0]
    AS = A @ S  # (M, D)
    G = AS @ A.T
    G = 0.5 * (G + G.T) + sigma**2 * torch.eye(M, dtype=torch.float64)
    r = y - A @ m  # (B, M)
    Kt, logdet = _psd_solve(G, AS)  # K^T = G^{-1} A S, (M, D)
    mean = m + r @ Kt
    # Joseph form (I - K A) S (I - K A)^T + sigma^2 K K^T: equal to S - K A S, and PSD by construction.
    IKA = torch.eye(S.shape[0], dtype=torch.float64) - Kt.T @ A
    cov = IKA @ S @ IKA.T + sigma**2 * (Kt.T @ Kt)
    cov = 0.5 * (cov + cov.T)
    sol, _ = _psd_solve(G, r.T)  # (M, B)
    loglik = -0.5 * ((r * sol.T).sum(1) + logdet + M * _LOG_2PI)
    return mean, cov, loglik


def exact_posterior(prior: GaussianPrior, op, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior of ``x0 ~ prior`` given ``y = A x0 + op.sigma_y * n``: (mean (B, C, H, W), cov (D, D)).

    Kalman form ``K = S A^T (A S A^T + sigma^2 I)^{-1}``, ``mean = m + K (y - A m)``,
    ``cov = S - K A S`` (computed in Joseph form, symmetric PSD). The covariance does not depend
    on y. Zero rows of A are dropped first, so inpainting's unobserved pixels (and sigma_y = 0
    with a full-row-rank A) are fine. float64, CPU.
    """
    A, keep = _observed(op, prior.shape)
    yf = _flat_measurement(op, y, prior.shape)[:, keep]
    mean, cov, _ = _kalman(prior.mean.cpu(), prior.cov.cpu(), A, float(op.sigma_y), yf)
    return mean.reshape(-1, *prior.shape), cov


def exact_posterior_gmm(prior: GaussianMixturePrior, op, y: torch.Tensor):
    """Posterior of a Gaussian mixture prior: (weights (B, K), means (B, K, C, H, W), covs (K, D, D)).

    Component k's posterior is the Kalman update of N(m_k, S_k); its weight is
    ``∝ w_k N(y; A m_k, A S_k A^T + sigma^2 I)`` (normalised in log space). A GaussianPrior is
    treated as a one-component mixture.
    """
    if isinstance(prior, GaussianPrior):
        means_p, covs_p, w = prior.mean.cpu()[None], prior.cov.cpu()[None], torch.ones(1, dtype=torch.float64)
    else:
        means_p, covs_p, w = prior.means.cpu(), prior.covs.cpu(), prior.weights.cpu()
    A, keep = _observed(op, prior.shape)
    yf = _flat_measurement(op, y, prior.shape)[:, keep]
    out = [_kalman(means_p[k], covs_p[k], A, float(op.sigma_y), yf) for k in range(len(w))]
    logw = torch.stack([o[2] for o in out], 1) + w.log()  # (B, K)
    weights = torch.softmax(logw, dim=1)
    means = torch.stack([o[0] for o in out], 1).reshape(yf.shape[0], len(w), *prior.shape)
    return weights, means, torch.stack([o[1] for o in out])


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def _sqrt_psd(S: np.ndarray) -> np.ndarray:
    import scipy.linalg

    lam, V = scipy.linalg.eigh(0.5 * (S + S.T))
    return (V * np.sqrt(np.clip(lam, 0, None))) @ V.T


def gaussian_w2(mean1, cov1, mean2, cov2) -> float:
    """2-Wasserstein distance (not squared) between N(mean1, cov1) and N(mean2, cov2), in float64:

    ``W2^2 = |m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)``.

    Means of any shape are flattened; the matrix square roots are taken with scipy's symmetric
    eigensolver (for PSD matrices this is sqrtm without its complex round-off)."""
    m1 = _f64(mean1).reshape(-1).numpy()
    m2 = _f64(mean2).reshape(-1).numpy()
    C1, C2 = _f64(cov1).numpy(), _f64(cov2).numpy()
    if C1.shape != (m1.size, m1.size) or C2.shape != C1.shape or m2.shape != m1.shape:
        raise ValueError(f"shapes do not match: means {m1.shape}, {m2.shape}, covs {C1.shape}, {C2.shape}")
    s2 = _sqrt_psd(C2)
    cross = _sqrt_psd(s2 @ C1 @ s2)
    d2 = float(np.sum((m1 - m2) ** 2) + np.trace(C1) + np.trace(C2) - 2 * np.trace(cross))
    return math.sqrt(max(d2, 0.0))


def _quantiles(p: torch.Tensor, n: int) -> torch.Tensor:
    """Quantile function of each column of sorted p (N, P) at the n mid-point levels (i + 0.5) / n."""
    N = p.shape[0]
    if N == n:
        return p
    pos = ((torch.arange(n, dtype=torch.float64) + 0.5) / n * N - 0.5).clamp(0, N - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(N - 1)
    frac = (pos - lo)[:, None]
    return p[lo] * (1 - frac) + p[hi] * frac


def sliced_wasserstein(samples_a, samples_b, num_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (N, ...) and (M, ...):
    ``sqrt(mean over random unit directions theta of W2^2(<theta, a>, <theta, b>))``.

    1-D distances compare sorted projections (equal sizes) or quantile functions (linear
    interpolation at (i + 0.5) / n, n = max(N, M)). Directions come from ``generator``."""
    a = _f64(samples_a).flatten(1)
    b = _f64(samples_b).flatten(1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples of different dimensions: {a.shape[1]} and {b.shape[1]}")
    theta = torch.randn(a.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa = (a @ theta).sort(0).values
    pb = (b @ theta).sort(0).values
    n = max(pa.shape[0], pb.shape[0])
    diff = _quantiles(pa, n) - _quantiles(pb, n)
    return math.sqrt(float(diff.pow(2).mean()))


def variance_ratios(samples, exact_cov, top_k: int = 5) -> dict:
    """How much of the exact posterior spread a sampler reproduces.

    ``samples`` (N, ...) are flattened to (N, D). Returns ``trace``: tr(C_hat) / tr(C), and
    ``top``: (top_k,) ratios ``v_i^T C_hat v_i / lambda_i`` along the exact covariance's top-k
    eigenvectors (largest first), with those ``eigenvalues``. 1 means the right spread; a
    collapsed (mode-seeking) sampler gives values near 0.
    """
    X = _f64(samples).flatten(1)
    C = _f64(exact_cov)
    if C.shape != (X.shape[1], X.shape[1]):
        raise ValueError(f"exact_cov must be ({X.shape[1]}, {X.shape[1]}), got {tuple(C.shape)}")
    if X.shape[0] < 2:
        raise ValueError("need at least 2 samples")
    Xc = X - X.mean(0)
    C_hat = Xc.T @ Xc / (X.shape[0] - 1)
    lam, V = torch.linalg.eigh(0.5 * (C + C.T))
    lam, V = lam.flip(0)[:top_k], V.flip(1)[:, :top_k]
    along = ((Xc @ V).pow(2).sum(0) / (X.shape[0] - 1))
    return {"trace": float(C_hat.trace() / C.trace()), "top": along / lam, "eigenvalues": lam}


def mode_coverage(samples, posterior_weights, means, covs) -> dict:
    """Which posterior component each sample belongs to, against the exact component weights.

    ``samples`` (N, ...); ``posterior_weights`` (K,) for one measurement (a (1, K) row is
    accepted); ``means`` (K, ...); ``covs`` (K, D, D). Each sample goes to its most probable
    component ``argmax_k w_k N(x; m_k, C_k)``. Returns ``fractions`` (K,) (sums to 1), ``exact``
    (K,) (the weights) and ``tv``, the total-variation distance ``0.5 * sum |fractions - exact|``.
    """
    X = _f64(samples).flatten(1)
    w = _f64(posterior_weights)
    if w.ndim == 2 and w.shape[0] != 1:
        raise ValueError(f"posterior_weights are for one measurement: (K,) or (1, K), got {tuple(w.shape)}")
    w = w.reshape(-1)
    K = w.numel()
    M = _f64(means).reshape(K, -1)
    C = _f64(covs)
    if M.shape[1] != X.shape[1] or C.shape != (K, X.shape[1], X.shape[1]):
        raise ValueError(f"shapes do not match: samples {tuple(X.shape)}, means {tuple(M.shape)}, "
                         f"covs {tuple(C.shape)}")
    logp = []
    for k in range(K):
        lam, V = torch.linalg.eigh(0.5 * (C[k] + C[k].T))
        lam = lam.clamp_min(lam.max() * 1e-12 + 1e-300)
        z = (X - M[k]) @ V
        logp.append(-0.5 * ((z * z / lam).sum(1) + lam.log().sum() + X.shape[1] * _LOG_2PI))
    score = torch.stack(logp, 1) + w.clamp_min(1e-300).log()
    assign = score.argmax(1)
    fractions = torch.bincount(assign, minlength=K).double() / X.shape[0]
    return {"fractions": fractions, "exact": w / w.sum(), "tv": float(0.5 * (fractions - w / w.sum()).abs().sum())}
