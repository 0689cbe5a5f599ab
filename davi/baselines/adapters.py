"""davi priors and operators as deepinv objects (deepinv 0.5.0, imported here and only here).

Pixel ranges, converted in this module only
-------------------------------------------
davi works on pixels in [-1, 1]: ``x``, ``y = A x + sigma_y n`` with ``sigma_y`` the noise std on that
scale. deepinv's denoisers and its DiffPIR / DDRM / DPS data terms work on [0, 1]: ``x' = (x + 1) / 2``.
Our operators are linear (no offset), so ``A x = 2 A x' - A 1`` and the same measurement on deepinv's
scale is ``y' = (y + A 1) / 2 = A x' + (sigma_y / 2) n``: the noise std is **halved**
(:func:`to_unit`, :func:`noise_std`). ``A 1`` is 1 for SR and blur (kernels sum to 1) and the mask for
inpainting (an unobserved pixel stays exactly 0). Restorations come back with :func:`from_unit`.

The prior as a denoiser
-----------------------
deepinv calls a denoiser as ``D(x', sigma')`` with ``x' = x0' + sigma' n`` on [0, 1]. On our scale that is
``x = 2 x' - 1 = x0 + sigma n`` with ``sigma = 2 sigma'``, and the DDPM state at the level ``sigma`` is
``x_t = sqrt(ab) x`` with ``sigma = sqrt((1 - ab) / ab)`` (``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps``
divided by ``sqrt(ab)``). :class:`PriorDenoiser` takes the timestep whose level is nearest in log sigma
(the prior is only defined at its T integer steps; DiffPIR maps levels to steps the same way), evaluates
``eps(sqrt(ab_t) x, t)`` and returns ``(x - sigma eps + 1) / 2`` (Tweedie with the requested sigma; at a
grid level this is exactly the prior's ``x0(x_t, t)``); ``sigma = 0`` returns the input. It works for
the network prior and the analytic priors alike (both are ScorePriors), with autograd through ``x``
when enabled (DPS differentiates through the denoiser).

Operators as deepinv physics
----------------------------
:func:`as_physics` gives a :class:`deepinv.physics.LinearPhysics` whose ``A`` / ``A_adjoint`` are the
operator's own ``forward`` / ``adjoint`` and whose noise model is ``GaussianNoise(sigma_y / 2)``; where
the operator has a cheap SVD it is a :class:`deepinv.physics.DecomposablePhysics` (what DDRM needs, and an
exact ``prox_l2`` for DiffPIR):

* inpainting masks and denoising: ``U = V = I``, singular values = the mask (ones);
* SR by ``s x s`` average pooling: ``V^T`` is an orthonormal transform of each block whose first row is
  the constant ``1/s`` (the block's DC), singular value ``1/s`` on it and 0 on the ``s^2 - 1`` others;
  ``U`` picks the DC coefficient (coefficients are laid out ``(B, C * s^2, H / s, W / s)``);
* blur with a separable kernel (the Gaussian ones): reflect padding + correlation is ``A_h X A_w^T`` per
  channel with 1-D matrices ``A_h``, ``A_w``, so its SVD is the Kronecker product of two small SVDs
  (exact at any size; singular values ``s_h s_w^T``). A non-separable kernel gets a plain LinearPhysics
  (DPS and DiffPIR run; DDRM does not).
"""

from __future__ import annotations

import math

import torch

from davi.baselines._require import require_deepinv

dinv = require_deepinv()


class BaselineUnsupported(ValueError):
    """A baseline that cannot run on this operator (e.g. DDRM without an SVD)."""


# -- pixel ranges ----------------------------------------------------------------------------------
def noise_std(operator) -> float:
    """The measurement noise std on deepinv's [0, 1] scale: half of ``operator.sigma_y``."""
    return operator.sigma_y / 2


def to_unit(y: torch.Tensor, operator) -> torch.Tensor:
    """A measurement of [-1, 1] images as the measurement of their [0, 1] versions: ``(y + A 1) / 2``."""
    a1 = operator(torch.ones(1, operator.channels, operator.resolution, operator.resolution,
                             dtype=y.dtype, device=y.device))
    return (y + a1) / 2


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images back to [-1, 1]."""
    return 2 * x - 1


# -- the prior as a denoiser -----------------------------------------------------------------------
class PriorDenoiser(dinv.models.Denoiser):
    """A davi ScorePrior (DiffusionPrior, GaussianPrior, GaussianMixturePrior) as a deepinv denoiser on
    [0, 1] pixels: ``forward(x', sigma')`` (see the module docstring for the mapping)."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior
        ab = prior.schedule.alphas_cumprod.detach().double().cpu()
        self.register_buffer("log_sigmas", 0.5 * torch.log((1 - ab) / ab), persistent=False)  # [-1, 1] scale

    def timesteps(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest timestep in log sigma to each level ``sigma`` (on the [-1, 1] scale), shape (B,)."""
        logs = torch.log(sigma.double().clamp_min(1e-12)).to(self.log_sigmas.device)
        return (logs[:, None] - self.log_sigmas[None]).abs().argmin(1)

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        b = x.shape[0]
        s = self._handle_sigma(sigma, reference_tensor=x)
        s = (torch.as_tensor(s, dtype=x.dtype, device=x.device).reshape(-1) * 2).expand(b)  # [-1, 1] scale
        xs = 2 * x - 1
        t = self.timesteps(s).to(x.device)
        ab = self.prior.alpha_bar(t, xs)
        eps_fn = self.prior.eps_with_grad if torch.is_grad_enabled() else self.prior.eps
        eps = eps_fn(ab.sqrt() * xs, t)
        x0 = xs - s.view(-1, *([1] * (x.ndim - 1))) * eps
        return (x0 + 1) / 2


# -- operators as physics --------------------------------------------------------------------------
def _reflect_matrix(n: int, taps: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 matrix of 1-D reflect padding (torch 'reflect': the edge is not repeated) by
    ``len(taps) // 2`` on both sides followed by cross-correlation with ``taps``."""
    p = len(taps) // 2
    m = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j, w in enumerate(taps.tolist()):
            k = i + j - p
            k = -k if k < 0 else (2 * (n - 1) - k if k >= n else k)
            m[i, k] += w
    return m


def separable_factors(kernel: torch.Tensor, rtol: float = 1e-10):
    """(g_h, g_w) with ``kernel = outer(g_h, g_w)``, or None when the kernel is not rank one."""
    k = kernel.double()
    u, s, vh = torch.linalg.svd(k)
    if len(s) > 1 and s[1] > rtol * s[0]:
        return None
    return u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()


def _block_basis(s: int) -> torch.Tensor:
    """(s^2, s^2) orthonormal matrix Q whose first row is constant 1/s (rows: the transform's outputs)."""
    a = torch.eye(s * s, dtype=torch.float64)
    a[:, 0] = 1.0
    q, _ = torch.linalg.qr(a)
    q = q.T.clone()
    q[0] = q[0].sign() * q[0]  # the DC row positive
    return q


class _SvdPhysics(dinv.physics.DecomposablePhysics):
    """DecomposablePhysics whose U, U^T, V, V^T are this class's methods (subclasses fill them)."""

    def __init__(self, operator, mask: torch.Tensor):
        super().__init__(mask=mask.float(), noise_model=dinv.physics.GaussianNoise(sigma=noise_std(operator)))
        self.operator = operator

    def U(self, x, **kwargs):
        return self._u(x)

    def U_adjoint(self, x, **kwargs):
        return self._u_adjoint(x)

    def V(self, x, **kwargs):
        return self._v(x)

    def V_adjoint(self, x, **kwargs):
        return self._v_adjoint(x)


class MaskPhysics(_SvdPhysics):
    """Inpainting (``A = diag(m)``) and denoising (``A = I``): U = V = I, singular values m."""

    def __init__(self, operator, mask: torch.Tensor):
        super().__init__(operator, mask)

    def _u(self, x):
        return x

    _u_adjoint = _v = _v_adjoint = _u


class AveragePoolPhysics(_SvdPhysics):
    """s x s average pooling through its SVD (module docstring)."""

    def __init__(self, operator):
        s, c, r = operator.scale, operator.channels, operator.resolution
        mask = torch.zeros(1, c, s * s, r // s, r // s)
        mask[:, :, 0] = 1.0 / s
        super().__init__(operator, mask.reshape(1, c * s * s, r // s, r // s))
        self.register_buffer("q", _block_basis(s).float(), persistent=False)
        self.s = s

    def _v_adjoint(self, x):  # image (B, C, H, W) -> coefficients (B, C s^2, H/s, W/s)
        b, c, h, w = x.shape
        s = self.s
        blocks = x.reshape(b, c, h // s, s, w // s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // s, w // s, s * s)
        coef = blocks @ self.q.to(x).T
        return coef.permute(0, 1, 4, 2, 3).reshape(b, c * s * s, h // s, w // s)

    def _v(self, z):
        b, cs, hs, ws = z.shape
        s = self.s
        c = cs // (s * s)
        blocks = z.reshape(b, c, s * s, hs, ws).permute(0, 1, 3, 4, 2) @ self.q.to(z)
        return blocks.reshape(b, c, hs, ws, s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hs * s, ws * s)

    def _u(self, z):  # the DC coefficients are the measurement
        b, cs, hs, ws = z.shape
        return z.reshape(b, cs // (self.s * self.s), self.s * self.s, hs, ws)[:, :, 0]

    def _u_adjoint(self, y):
        b, c, hs, ws = y.shape
        z = torch.zeros(b, c, self.s * self.s, hs, ws, dtype=y.dtype, device=y.device)
        z[:, :, 0] = y
        return z.reshape(b, c * self.s * self.s, hs, ws)


class SeparableBlurPhysics(_SvdPhysics):
    """Reflect-padded blur with a separable kernel through the Kronecker SVD of its 1-D factors."""

    def __init__(self, operator, g_h: torch.Tensor, g_w: torch.Tensor):
        r, c = operator.resolution, operator.channels
        uh, sh, vht = torch.linalg.svd(_reflect_matrix(r, g_h))
        uw, sw, vwt = torch.linalg.svd(_reflect_matrix(r, g_w))
        super().__init__(operator, torch.outer(sh, sw).expand(1, c, r, r).contiguous())
        for name, m in (("uh", uh), ("vh", vht.T), ("uw", uw), ("vw", vwt.T)):
            self.register_buffer(name, m.float(), persistent=False)

    @staticmethod
    def _sandwich(left, x, right):
        return left.to(x) @ x @ right.to(x).T

    def _v_adjoint(self, x):
        return self._sandwich(self.vh.T, x, self.vw.T)

    def _v(self, z):
        return self._sandwich(self.vh, z, self.vw)

    def _u(self, z):
        return self._sandwich(self.uh, z, self.uw)

    def _u_adjoint(self, y):
        return self._sandwich(self.uh.T, y, self.uw.T)


class OperatorPhysics(dinv.physics.LinearPhysics):
    """Any davi operator as a LinearPhysics: ``A`` = forward, ``A_adjoint`` = adjoint (prox_l2 by CG)."""

    def __init__(self, operator):
        super().__init__(noise_model=dinv.physics.GaussianNoise(sigma=noise_std(operator)))
        self.operator = operator

    def A(self, x, **kwargs):
        return self.operator(x)

    def A_adjoint(self, y, **kwargs):
        return self.operator.adjoint(y)


def svd_physics(operator):
    """The operator's DecomposablePhysics, or None when it has no cheap SVD here."""
    from davi.operators import (
        BoxInpaint,
        Deblur,
        Denoise,
        Inpaint,
        RandomInpaint,
        SuperResolution,
    )

    c, r = operator.channels, operator.resolution
    if isinstance(operator, (BoxInpaint, RandomInpaint, Inpaint)):
        return MaskPhysics(operator, operator.mask.float().expand(1, c, r, r).contiguous())
    if isinstance(operator, Denoise):
        return MaskPhysics(operator, torch.ones(1, c, r, r))
    if isinstance(operator, SuperResolution):
        return AveragePoolPhysics(operator)
    if isinstance(operator, Deblur):
        factors = separable_factors(operator.kernel)
        return None if factors is None else SeparableBlurPhysics(operator, *factors)
    return None


def as_physics(operator, decomposable: bool | None = None):
    """The operator as deepinv physics on [0, 1] pixels (noise std ``sigma_y / 2``).

    ``decomposable``: True requires the SVD form (:class:`BaselineUnsupported` otherwise), False gives
    the plain :class:`OperatorPhysics`, None (default) the SVD form where there is one.
    """
    if decomposable is False:
        return OperatorPhysics(operator)
    physics = svd_physics(operator)
    if physics is None:
        if decomposable:
            raise BaselineUnsupported(f"{operator.describe()}: no singular value decomposition available here "
                                      f"(DDRM needs one: inpainting, denoising, SR by average pooling and "
                                      f"separable blur kernels have it)")
        return OperatorPhysics(operator)
    return physics


def gaussian_level(alphas_cumprod: torch.Tensor, t: int) -> float:
    """``sqrt((1 - ab_t) / ab_t)``: the noise level on [-1, 1] pixels of the DDPM state at ``t``."""
    ab = float(alphas_cumprod[t])
    return math.sqrt((1 - ab) / ab)
