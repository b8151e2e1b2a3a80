"""``launcher ui``: a web app (Gradio) over the functions the CLI calls.

Compose and check a run, submit it here or to SLURM, watch every run and sweep under the output root, compare
curves, chat with a trained model, export and predict. State lives in the run dirs, never in the app, so a
reload or a restart loses nothing and runs started from the CLI appear too. Nothing here composes, checks,
submits or reports on its own: see ``launcher.ui.actions`` for the calls into the CLI's functions.
"""
