"""Models: the student zoo (``STUDENTS``), the timm teacher, the parameter-count gate and the
deployable artifacts (safetensors + json)."""
from .artifacts import ArtifactError, load_student, load_teacher, save_artifact
from .budget import BudgetError, ParamCount, check_budget, check_count, count_params, param_count
from .students import STUDENTS, StudentNet, create_student, predicted_params
from . import tutorials  # noqa: F401,E402 - registers the tutorials' nets in STUDENTS

__all__ = ["STUDENTS", "StudentNet", "create_student", "BudgetError", "ParamCount", "check_budget", "check_count", "predicted_params", "count_params", "param_count",
           "ArtifactError", "load_student", "load_teacher", "save_artifact"]
