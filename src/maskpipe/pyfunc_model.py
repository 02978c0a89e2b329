"""MLflow "model from code" entry point: log_pyfunc_model passes this file as python_model,
so the logged model holds code, not a pickle. See maskpipe.pyfunc."""

from mlflow.models import set_model

from maskpipe.pyfunc import MaskpipeModel

set_model(MaskpipeModel())
