"""The mapper I_phi: a one-step posterior sampler in the bridge parametrisation (DAVI, Lee et al. 2024).

``I_phi(x_a, a) = x_a - std_fwd[a] * net(x_a, a)`` where ``net`` is a UNet2DModel that starts
from the prior's weights. At inference ``a = T - 1`` and ``x_a = lift(y) + h z``: one network
evaluation per sample, different ``z`` giving different posterior samples. With ``noise_channels``
> 0 the network also sees that many channels of N(0, 1) noise beside ``x_a`` (drawn in ``forward``
unless given): randomness at unit scale that is not mixed into the measurement, as h z is.
A mapper trained on a family of operators is **conditioned** (davi.models.conditioning): with
``cond_channels`` > 0 it also sees the condition's maps as input channels, with ``cond_dim`` > 0 its
condition vector through the UNet's time embedding; ``forward``/``restore`` then need a ``condition``.

During training the Perturbed Posterior Bridge (PPB) also shows it states between the clean image and the
measurement, ``x_a = mu_x0[a] x0 + mu_x1[a] lift(y) + h (1 - alpha_bar[a]) z``, with
``a ~ T * Beta(3, 1)``.

Saved and loaded with diffusers ``save_pretrained``/``from_pretrained`` (config.json +
safetensors): the UNet's config is part of the mapper's config.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config

from davi.models.prior import _extract, with_extra_inputs


def bridge_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """The symmetric schedule of I2SB (Liu et al. 2023) that DAVI's bridge uses: (std_fwd, std_bwd, mu_x0,
    mu_x1), float64, shape (T,)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    half = betas[: num_timesteps // 2]
    betas = torch.cat([half, half.flip(0)])
    if betas.numel() < num_timesteps:  # odd T: repeat the middle value
        betas = torch.cat([half, half[-1:], half.flip(0)])
    var_fwd = betas.cumsum(0)
    var_bwd = betas.flip(0).cumsum(0).flip(0)
    total = var_fwd + var_bwd
    return var_fwd.sqrt(), var_bwd.sqrt(), var_bwd / total, var_fwd / total


class Mapper(ModelMixin, ConfigMixin):
    """x_hat = I_phi(x_a, a); ``restore(y_lifted, z)`` is the one-step sampler."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, unet_config: dict, image_channels: int, h: float = 0.1, tanh: bool = False,
                 num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 noise_channels: int = 0, cond_channels: int = 0, cond_dim: int = 0):
        super().__init__()
        self.net = UNet2DModel.from_config(unet_config)
        if cond_dim:
            # the vector enters where the timestep does (UNet2DModel adds class_labels to its time embedding)
            if unet_config.get("class_embed_type") != "identity":
                raise ValueError("a mapper with cond_dim > 0 needs unet_config class_embed_type 'identity'")
            width = self.net.time_embedding.linear_2.out_features
            self.cond_proj = torch.nn.Linear(cond_dim, width)
        std_fwd, std_bwd, mu_x0, mu_x1 = bridge_schedule(num_timesteps, beta_start, beta_end)
        self.register_buffer("std_fwd", std_fwd.float(), persistent=False)
        self.register_buffer("mu_x0", mu_x0.float(), persistent=False)
        self.register_buffer("mu_x1", mu_x1.float(), persistent=False)

    @classmethod
    def from_prior_unet(cls, unet: UNet2DModel, h: float, tanh: bool, num_timesteps: int = 1000,
                        noise_channels: int = 0, cond_channels: int = 0, cond_dim: int = 0) -> "Mapper":
        """A mapper whose network starts as a copy of the prior's weights (the noise channels' input
        weights keep their fresh initialisation: zero would be a stationary point of the spread; the
        condition's channels and projection start at zero, so the copy computes what the prior's UNet
        does until it learns to read them)."""
        c = unet.config.in_channels
        if noise_channels:
            unet = with_extra_inputs(unet, noise_channels, zero=False)
        if cond_channels:
            unet = with_extra_inputs(unet, cond_channels, zero=True)
        cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
        if cond_dim:
            cfg["class_embed_type"] = "identity"
        mapper = cls(unet_config=cfg, image_channels=c, h=h, tanh=tanh, num_timesteps=num_timesteps,
                     noise_channels=noise_channels, cond_channels=cond_channels, cond_dim=cond_dim)
        mapper.net.load_state_dict(unet.state_dict())
        if cond_dim:
            torch.nn.init.zeros_(mapper.cond_proj.weight)
            torch.nn.init.zeros_(mapper.cond_proj.bias)
        return mapper

    @property
    def conditioned(self) -> bool:
        """True for a family's mapper: forward and restore need a ``condition``."""
        return bool(self.config.cond_channels or self.config.cond_dim)

    @property
    def num_timesteps(self) -> int:
        return self.config.num_timesteps

    def noise_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], self.config.noise_channels, *x.shape[2:])

    def z_shape(self, lifted: torch.Tensor) -> tuple[int, ...]:
        """The shape of ``restore``'s standard normal ``z``: the image's channels (for h z), then the
        noise channels."""
        return (lifted.shape[0], lifted.shape[1] + self.config.noise_channels, *lifted.shape[2:])

    def forward(self, x_a: torch.Tensor, a: torch.Tensor, noise: torch.Tensor | None = None,
                condition=None) -> torch.Tensor:
        c = self.config.image_channels
        inputs = [x_a]
        if self.config.noise_channels:
            if noise is None:
                noise = torch.randn(self.noise_shape(x_a), device=x_a.device, dtype=x_a.dtype)
            inputs.append(noise)
        if self.conditioned and condition is None:
            raise ValueError("this mapper was trained on a family of operators: it needs a condition "
                             "(davi.models.conditioning.family_condition)")
        if self.config.cond_channels:
            inputs.append(condition.maps.to(x_a))
        labels = self.cond_proj(condition.vector.to(x_a)) if self.config.cond_dim else None
        out = self.net(torch.cat(inputs, 1) if len(inputs) > 1 else x_a, a, class_labels=labels).sample[:, :c]
        x_hat = x_a - _extract(self.std_fwd, a, x_a) * out  # a learned-variance prior's extra channels are unused
        return torch.tanh(x_hat) if self.config.tanh else x_hat

    def inference_input(self, lifted: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return lifted + self.config.h * z

    def restore(self, lifted: torch.Tensor, z: torch.Tensor | None = None,
                generator: torch.Generator | None = None, condition=None) -> torch.Tensor:
        """One posterior sample per image: I_phi(lift(y) + h z, T - 1); ``z`` of ``z_shape(lifted)``
        (its channels past the image's are the noise channels); ``condition``: a conditioned mapper's."""
        if z is None:
            z = torch.randn(self.z_shape(lifted), generator=generator, dtype=lifted.dtype).to(lifted.device)
        c = lifted.shape[1]
        a = torch.full((lifted.shape[0],), self.num_timesteps - 1, device=lifted.device, dtype=torch.long)
        return self(self.inference_input(lifted, z[:, :c]), a, z[:, c:] if self.config.noise_channels else None,
                    condition)


class PPBSampler:
    """Draws training inputs of the Perturbed Posterior Bridge.

    ``a ~ T * Beta(alpha, beta)`` puts most mass near the measurement end (a = T - 1), where the
    mapper is used at inference; smaller ``a`` show it states closer to the clean image. With
    ``enabled=False`` every input is the inference input (a = T - 1), the "no PPB" ablation.
    """

    def __init__(self, mapper_schedule: Mapper, alphas_cumprod: torch.Tensor, h: float,
                 alpha: float = 3.0, beta: float = 1.0, enabled: bool = True):
        self.T = mapper_schedule.num_timesteps
        self.mu_x0 = mapper_schedule.mu_x0.detach().clone()
        self.mu_x1 = mapper_schedule.mu_x1.detach().clone()
        self.one_minus_ab = (1 - alphas_cumprod.double()).float()
        self.h = h
        self.dist = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(beta))
        self.enabled = enabled

    def sample_a(self, n: int, device) -> torch.Tensor:
        if not self.enabled:
            return self._inference_a(n, device)
        a = (self.dist.sample((n,)) * self.T).long().clamp_(0, self.T - 1)
        return a.to(device)

    def _inference_a(self, n: int, device) -> torch.Tensor:
        return torch.full((n,), self.T - 1, dtype=torch.long, device=device)

    def __call__(self, x0: torch.Tensor, lifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._input_at(x0, lifted, self.sample_a(x0.shape[0], x0.device))

    def at_inference(self, x0: torch.Tensor, lifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh input at the measurement end (a = T - 1), where the mapper is used at inference."""
        return self._input_at(x0, lifted, self._inference_a(x0.shape[0], x0.device))

    def _input_at(self, x0: torch.Tensor, lifted: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bridge input at ``a`` with fresh noise, a)."""
        z = torch.randn_like(x0)
        return self.mean(x0, lifted, a) + self.h * _extract(self.one_minus_ab, a, x0) * z, a

    def mean(self, x0: torch.Tensor, lifted: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The bridge input at ``a`` without its noise: mu_x0[a] x0 + mu_x1[a] lift(y)."""
        return _extract(self.mu_x0, a, x0) * x0 + _extract(self.mu_x1, a, x0) * lifted
