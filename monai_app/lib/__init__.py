"""The fracseg MONAI Label app's library: task configs, infer/train tasks, active learning, scoring, and
the hardened datastore (``main.py`` wires them)."""
