"""Mutations of the sampler objective (davi/training/recipes/sampler.py, its weight in davi/training/losses.py,
s_psi's conditioning in davi/training/recipes/parts.py)."""

from benchmarks.mutate import Mutation

SAMPLER = "davi/training/recipes/sampler.py"
LOSSES = "davi/training/losses.py"
LOSS_TESTS = ("tests/test_sampler.py::test_sampler_mapper_loss_is_ikl_plus_the_derived_weight_plus_mean_matching_of_two_draws"
              " tests/test_sampler.py::test_sampler_mapper_loss_without_mean_matching_and_its_weight_at_the_posterior")
WEIGHT_TESTS = "tests/test_sampler.py::test_consistency_weight_is_the_likelihood_in_the_iklss_normalisation " + LOSS_TESTS

MUTATIONS = [
    Mutation("sampler_loss_reads_lambda_con", SAMPLER,
             "loss = dc.lambda_ikl * l_ikl + lam * l_con", "loss = dc.lambda_ikl * l_ikl + dc.lambda_con * l_con",
             LOSS_TESTS, "the sampler's consistency weight is derived from sigma_y; davi.lambda_con is not read"),
    Mutation("sampler_derived_weight_doubled", SAMPLER,
             "loss = dc.lambda_ikl * l_ikl + lam * l_con", "loss = dc.lambda_ikl * l_ikl + 2 * lam * l_con",
             LOSS_TESTS, "twice the derived weight moves the optimum off the posterior (variance -15%)"),
    Mutation("sampler_ikl_weight_ignored", SAMPLER,
             "loss = dc.lambda_ikl * l_ikl + lam * l_con", "loss = l_ikl + lam * l_con",
             LOSS_TESTS, "davi.lambda_ikl scales the IKL term"),
    Mutation("sampler_lambda_ikl_not_on_the_consistency_weight", SAMPLER,
             "lam = dc.lambda_ikl * consistency_weight(cfg, prior, operator)", "lam = consistency_weight(cfg, prior, operator)",
             LOSS_TESTS, "lambda_ikl scales IKL + lambda* consistency together, or the optimum leaves the posterior"),
    Mutation("sampler_mean_matching_off", SAMPLER, "if dc.lambda_mean:", "if False:",
             LOSS_TESTS, "davi.lambda_mean > 0 adds the mean-matching term"),
    Mutation("sampler_mean_matching_not_in_the_loss", SAMPLER,
             "loss = loss + dc.lambda_mean * l_mean", "loss = loss",
             LOSS_TESTS, "the mean-matching term is logged but must also be trained on"),
    Mutation("sampler_mean_matching_same_draw_twice", SAMPLER,
             "l_mean = mean_matching_loss(x0, first, nets[\"mapper\"](*ppb.at_inference(x0, lifted)))",
             "l_mean = mean_matching_loss(x0, first, first)",
             LOSS_TESTS, "one draw twice is the plain regression mse(x0, x_hat), which collapses the spread"),
    Mutation("sampler_mean_matching_first_draw_at_the_bridge_input", SAMPLER,
             "first = nets[\"mapper\"](*ppb.at_inference(x0, lifted)) if ppb.enabled else x_hat",
             "first = x_hat", LOSS_TESTS, "with PPB on, x_hat is drawn at a bridge input, not at inference"),
    Mutation("sampler_weight_sigma_y_not_squared", LOSSES,
             "return w_bar * measurement_numel / (2 * image_numel * sigma_y**2)",
             "return w_bar * measurement_numel / (2 * image_numel * sigma_y)",
             WEIGHT_TESTS, "lambda = w_bar M / (2 D sigma_y^2)"),
    Mutation("sampler_weight_without_w_bar_ratio", LOSSES,
             "w_bar = float(((1 - ab) / ab).sqrt().mean())", "w_bar = float((1 - ab).sqrt().mean())",
             WEIGHT_TESTS, "w_t = sqrt((1 - ab_t) / ab_t), the IKL's weight per unit KL"),
    Mutation("sampler_weight_image_size_for_M", SAMPLER,
             "M = math.prod(operator.measurement_shape(shape)[1:])", "M = D",
             LOSS_TESTS, "M is the measurement's size (4 for SR x2 of 4x4), not the image's"),
    Mutation("sampler_dsm_over_all_t", SAMPLER,
             "dsm = DDPMLoss(schedule, t_max=dc.t_ikl)", "dsm = DDPMLoss(schedule)",
             LOSS_TESTS, "s_psi learns only the t < t_ikl the IKL reads"),
    Mutation("sampler_ikl_reads_an_unconditioned_s_psi", SAMPLER,
             "l_ikl, logs = ikl_term(ikl, x_hat, teacher_eps, nets, accelerator, c, cond)",
             "l_ikl, logs = ikl_term(ikl, x_hat, teacher_eps, nets, accelerator, c, None)",
             LOSS_TESTS, "with davi.score_condition the IKL's s_psi must see what it was trained on"),
    Mutation("sampler_center_not_subtracted", "davi/training/recipes/parts.py",
             "return torch.cat([x_t - c_t, c.to(x_t.dtype)], 1)", "return torch.cat([x_t, c.to(x_t.dtype)], 1)",
             "tests/test_sampler.py::test_score_condition_gives_s_psi_the_measurement_or_the_deviation_from_the_mappers_center",
             "score_condition=center: s_psi sees x_t - sqrt(ab_t) c(y)"),
]
