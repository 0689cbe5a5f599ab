"""Priors whose posteriors are known exactly, their posteriors, and distances to check samplers.

* :mod:`davi.analytic.priors`: Gaussian / Gaussian-mixture priors with closed-form ``eps``, fitted to images;
* :mod:`davi.analytic.posterior`: exact posteriors for every linear operator, and the closed-form
  optimum of DAVI's objective over Gaussians;
* :mod:`davi.analytic.distances`: Gaussian W2, sliced Wasserstein, variance ratios, mode coverage;
* :mod:`davi.analytic.check`: a mapper's posterior samples and their distances to the exact posterior.
* :mod:`davi.analytic.problems`: the benchmarks' problems (8x8 digit priors, linear tasks) and training a
  mapper against an analytic prior (not re-exported here: import it as ``davi.analytic.problems``).
"""

from davi.analytic.check import mapper_samples, posterior_figures
from davi.analytic.distances import (
    COVERAGE_LEVELS,
    gaussian_w2,
    interval_coverage,
    mode_coverage,
    sliced_wasserstein,
    variance_ratios,
)
from davi.analytic.posterior import (
    Posterior,
    calibrate_lambda_con,
    davi_fixed_point,
    davi_objective,
    exact_posterior,
    exact_posterior_gmm,
    exact_posteriors,
    held_out_measurements,
    ikl_curvature,
    operator_matrix,
)
from davi.analytic.priors import (
    GaussianMixturePrior,
    GaussianPrior,
    digit_images,
    fit_gaussian,
    fit_gmm,
    prior_components,
    stationary_gaussian,
)

__all__ = [
    "GaussianPrior",
    "GaussianMixturePrior",
    "prior_components",
    "fit_gaussian",
    "fit_gmm",
    "digit_images",
    "stationary_gaussian",
    "operator_matrix",
    "exact_posterior",
    "exact_posterior_gmm",
    "Posterior",
    "exact_posteriors",
    "held_out_measurements",
    "ikl_curvature",
    "davi_fixed_point",
    "davi_objective",
    "calibrate_lambda_con",
    "gaussian_w2",
    "sliced_wasserstein",
    "variance_ratios",
    "mode_coverage",
    "interval_coverage",
    "COVERAGE_LEVELS",
    "mapper_samples",
    "posterior_figures",
]
