"""Mutations of the restoration page's handlers and command (davi/cli/app.py)."""

from benchmarks.mutate import Mutation

APP = "davi/cli/app.py"
T = "tests/test_app.py"
RESTORE = f"{T}::test_test_digit_restores_with_samples_timing_and_consistency"
FLAGGED = f"{T}::test_an_inconsistent_answer_is_flagged_above_the_threshold"
LINE = f"{T}::test_consistency_line_states_the_verdict_of_r_against_the_threshold"

MUTATIONS = [
    Mutation("app_consistency_verdict_inverted", APP,
             'try RED-Diff" if out.flagged[0] else "within"', 'try RED-Diff" if not out.flagged[0] else "within"',
             f"{RESTORE} {FLAGGED} {LINE}",
             "r above the card's threshold reads 'above', r below it 'within'"),
    Mutation("app_psnr_of_the_lift", APP,
             "{float(psnr(mean[None], x)[0]):.2f} dB", "{float(psnr(lifted[None], x)[0]):.2f} dB",
             RESTORE, "the PSNR shown is the restoration's (the samples' mean), not lift(y)'s"),
    Mutation("app_psnr_of_the_first_sample", APP,
             "{float(psnr(mean[None], x)[0]):.2f} dB", "{float(psnr(restored[:1], x)[0]):.2f} dB",
             RESTORE, "the PSNR shown is the mean's, as the page says"),
    Mutation("app_consistency_of_the_wrong_image", APP,
             "r = float(out.consistency[0])", "r = float(out.consistency[0]) * 0.5",
             f"{RESTORE} {LINE}", "the statistic shown is the Restorer's"),
    Mutation("app_port_ignored", APP,
             "server_port=args.port", "server_port=DEFAULT_PORT",
             f"{T}::test_the_page_serves_on_the_port_asked_for_on_loopback",
             "--port / DAVI_APP_PORT choose the port"),
    Mutation("app_port_env_ignored", APP,
             'default=int(os.environ.get("DAVI_APP_PORT", DEFAULT_PORT))', "default=DEFAULT_PORT",
             f"{T}::test_the_page_serves_on_the_port_asked_for_on_loopback",
             "DAVI_APP_PORT sets the default port"),
    Mutation("app_missing_gradio_exit_zero", APP,
             "print(\"error: gradio is not installed: pip install 'davi[app]'\", file=sys.stderr)\n        return 2",
             "print(\"error: gradio is not installed: pip install 'davi[app]'\", file=sys.stderr)\n        return 0",
             f"{T}::test_without_gradio_the_page_exits_with_one_line_naming_the_extra",
             "without Gradio the command fails (non-zero), naming the extra"),
    Mutation("app_missing_gradio_traceback", APP,
             "    try:\n        import gradio  # noqa: F401\n    except ImportError:",
             "    try:\n        import gradio  # noqa: F401\n    except KeyError:",
             f"{T}::test_without_gradio_the_page_exits_with_one_line_naming_the_extra",
             "without Gradio: one line, not an ImportError traceback"),
    Mutation("app_listens_on_every_interface", APP,
             "server_name=HOST", 'server_name="0.0.0.0"',
             f"{T}::test_the_page_serves_on_the_port_asked_for_on_loopback",
             "the page is served on loopback only"),
]
