"""Training's MLflow tracker: the PyTorch model and, beside it, the servable pyfunc model.

A module of its own so that only the stages that log models (train) import the serving stack
(maskpipe.pyfunc -> predict -> crop / detect); evaluation logs through the plain MlflowTracker.
"""

from __future__ import annotations

from maskpipe.tracker import MlflowTracker


class ServingMlflowTracker(MlflowTracker):
    """MlflowTracker whose log_model also logs and registers ``maskpipe-<model name>``: detector +
    preprocessing + labels + these weights, one pyfunc model that ``mlflow models serve`` runs."""

    def log_model(self, model_path, model_name) -> None:
        super().log_model(model_path, model_name)
        # imported here: the serving stack is heavy and only needed when a model is really logged
        from maskpipe.pyfunc import log_pyfunc_model

        log_pyfunc_model(model_path, f"maskpipe-{model_name}")
