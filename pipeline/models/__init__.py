"""Models: the student zoo (``STUDENTS``), the timm teacher, and the parameter-count gate."""
from .budget import BudgetError, check_budget, count_params
from .students import STUDENTS, StudentNet, create_student

__all__ = ["STUDENTS", "StudentNet", "create_student", "BudgetError", "check_budget", "count_params"]
