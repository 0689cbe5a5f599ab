"""Gaussian and Gaussian-mixture priors on images with closed-form scores, and their fitting.

Samplers (DAVI, RED-Diff, DDPM/DDIM) only see a prior through ``eps(x_t, t)``. For a Gaussian
prior ``x0 ~ N(m, S)`` the diffused marginal is ``x_t ~ N(sqrt(ab) m, ab S + (1 - ab) I)``, so the
ideal noise prediction is available in closed form::

    E[eps | x_t] = -sqrt(1 - ab) * score(x_t) = sqrt(1 - ab) (ab S + (1 - ab) I)^{-1} (x_t - sqrt(ab) m).

A mixture of Gaussians keeps this componentwise (responsibilities computed in log space). With a
linear measurement the posterior is known exactly too (:mod:`davi.analytic.posterior`), so these
stand-ins let tests and the benchmark check that a sampler converges to the right answer, with
no network error in the way.

Conventions:

* images are ``(B, C, H, W)``; a prior's ``mean`` is stored flat, shape ``(D,)`` with
  ``D = C * H * W`` in row-major (``x.reshape(B, D)``) order, ``cov`` is ``(D, D)``;
* everything is precomputed in float64; ``eps`` accepts float16/32/64 inputs on any device,
  computes in float64 (float32 on MPS, which has no float64) and returns the input's dtype;
* the covariance is eigendecomposed once (``S = V diag(lam) V^T``), so one ``eps`` call is two
  ``(B, D) x (D, D)`` matmuls: use these priors for small images (D up to a few thousand);
* like :class:`~davi.models.prior.DiffusionPrior`, ``eps`` runs without autograd (the prior is frozen);
  ``eps_with_grad`` keeps the graph through ``x_t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from davi.analytic._common import LOG_2PI, f64
from davi.models.prior import Schedule, ScorePrior, build_scheduler

__all__ = ["GaussianPrior", "GaussianMixturePrior", "prior_components", "fit_gaussian", "fit_gmm", "digit_images",
           "stationary_gaussian"]


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
        S = f64(cov)
        if S.shape != (dim, dim):
            raise ValueError(f"cov must be ({dim}, {dim}), got {tuple(S.shape)}")
        if not torch.allclose(S, S.T, rtol=1e-6, atol=1e-10 * float(S.abs().max().clamp_min(1.0))):
            raise ValueError("cov must be symmetric")
        return 0.5 * (S + S.T)
    if cov_factor is None and cov_diag is None:
        raise ValueError("a covariance is needed: cov, or cov_factor and/or cov_diag")
    S = torch.zeros(dim, dim, dtype=torch.float64)
    if cov_factor is not None:
        U = f64(cov_factor)
        if U.ndim == 1:
            U = U[:, None]
        if U.ndim != 2 or U.shape[0] != dim:
            raise ValueError(f"cov_factor must be ({dim}, rank), got {tuple(U.shape)}")
        S = S + U @ U.T
    if cov_diag is not None:
        d = f64(cov_diag).reshape(-1)
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
        # the default DDPM schedule (Ho et al. 2020: T = 1000, linear betas), or the one given
        scheduler = build_scheduler() if alphas_cumprod is None else build_scheduler(alphas_cumprod=f64(alphas_cumprod))
        if alphas_cumprod is None:
            alphas_cumprod = scheduler.alphas_cumprod
        self.scheduler = scheduler
        self.schedule = Schedule(f64(alphas_cumprod))
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape)
        self.channels = self.shape[0]
        self.resolution = self.shape[1]  # H (the images are square in this project)
        self.identity = identity
        self.digest = ""

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
    """``x0 ~ N(mean, Sigma)`` on ``(C, H, W)`` images, as a :class:`~davi.models.prior.ScorePrior`.

    Sigma is given as a full matrix (``cov``) or as low-rank-plus-diagonal
    ``cov_factor @ cov_factor.T + diag(cov_diag)`` (either part may be left out). ``mean`` is
    ``(C, H, W)`` or flat ``(D,)`` (then ``shape`` is required). The schedule is the default DDPM
    one (T = 1000, linear betas 1e-4 .. 0.02) unless ``alphas_cumprod`` is given.
    Buffers: ``mean`` (D,), ``cov`` (D, D), ``eigvals`` (D,), ``eigvecs`` (D, D), all float64.
    """

    def __init__(self, mean, cov_factor=None, cov_diag=None, cov=None, shape=None, alphas_cumprod=None,
                 identity: str | None = None):
        super().__init__()
        m = f64(mean)
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
        return -0.5 * ((z * z / den).sum(1) + den.log().sum(1) + self.dim * LOG_2PI)

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
        w = f64(weights).reshape(-1)
        M = f64(means)
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
        logp = -0.5 * ((z * z / den).sum(2) + den.log().sum(2) + self.dim * LOG_2PI)  # (B, K)
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


def prior_components(prior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights (K,), means (K, D), covs (K, D, D)) of a Gaussian (K = 1) or a mixture, float64 CPU."""
    if isinstance(prior, GaussianPrior):
        return torch.ones(1, dtype=torch.float64), prior.mean.cpu()[None], prior.cov.cpu()[None]
    return prior.weights.cpu(), prior.means.cpu(), prior.covs.cpu()


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
    images = f64(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    m, U, d = _lowrank_fit(images.reshape(images.shape[0], -1), rank, min_var)
    return GaussianPrior(m.reshape(images.shape[1:]), cov_factor=U, cov_diag=d, alphas_cumprod=alphas_cumprod,
                         identity=f"gaussian:dim={m.numel()},rank={rank}")


def stationary_gaussian(resolution: int = 8, mean: float = 0.0, std: float = 0.5, length_scale: float = 1.5,
                        nugget: float = 1e-3, alphas_cumprod=None) -> GaussianPrior:
    """A full-rank Gaussian on (1, r, r) images with a STATIONARY covariance, not fitted to any data:
    the squared-exponential kernel over the pixel grid plus a nugget,

        Sigma_ij = std^2 exp(-|p_i - p_j|^2 / (2 length_scale^2)) + nugget * delta_ij,

    (p: pixel coordinates), constant mean. The covariance depends on p_i - p_j only, and the nugget
    makes it full rank (smallest eigenvalue >= nugget)."""
    if not (std > 0 and length_scale > 0 and nugget > 0 and resolution >= 1):
        raise ValueError(f"stationary_gaussian needs std, length_scale, nugget > 0 and resolution >= 1, got "
                         f"std={std}, length_scale={length_scale}, nugget={nugget}, resolution={resolution}")
    r = torch.arange(resolution, dtype=torch.float64)
    p = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    d2 = (p[:, None] - p[None]).pow(2).sum(-1)
    S = std**2 * torch.exp(-d2 / (2 * length_scale**2)) + nugget * torch.eye(p.shape[0], dtype=torch.float64)
    return GaussianPrior(torch.full((1, resolution, resolution), float(mean), dtype=torch.float64), cov=S,
                         alphas_cumprod=alphas_cumprod,
                         identity=f"stationary:se,r={resolution},mean={mean},std={std},l={length_scale},nugget={nugget}")


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
    images = f64(images)
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
    from davi.data.datasets import load_split

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
