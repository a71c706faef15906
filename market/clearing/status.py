"""The one table that maps solver outcomes onto :class:`~market.domain.ClearingStatus`.

Nothing else in PeerGrid compares against pyomo's enums (linopy's ``constants.py`` pattern).

TIME_LIMIT means a **wall-clock** stop only (HiGHS's ``time_limit``, set only when a
wall-clock budget is asked for): the one outcome a re-clear on another machine is not expected
to reproduce. An **iteration-limit** stop is deterministic (the same book stops at the same
iteration on any machine) and so is a SOLVER_ERROR (:data:`ITERATION_LIMIT_TERMINATIONS`
names it), which a re-clear must reproduce like any other outcome.
"""

from __future__ import annotations

from pyomo.contrib.solver.common.results import TerminationCondition

from market.domain import ClearingStatus

TERMINATION_TO_STATUS: dict[TerminationCondition, ClearingStatus] = {
    TerminationCondition.convergenceCriteriaSatisfied: ClearingStatus.CLEARED,
    TerminationCondition.maxTimeLimit: ClearingStatus.TIME_LIMIT,
    TerminationCondition.iterationLimit: ClearingStatus.SOLVER_ERROR,  # deterministic
    TerminationCondition.objectiveLimit: ClearingStatus.SOLVER_ERROR,
    TerminationCondition.minStepLength: ClearingStatus.SOLVER_ERROR,
    TerminationCondition.unbounded: ClearingStatus.SOLVER_ERROR,
    TerminationCondition.provenInfeasible: ClearingStatus.INFEASIBLE,
    TerminationCondition.locallyInfeasible: ClearingStatus.INFEASIBLE,
    TerminationCondition.infeasibleOrUnbounded: ClearingStatus.INFEASIBLE,
    TerminationCondition.error: ClearingStatus.SOLVER_ERROR,
    TerminationCondition.interrupted: ClearingStatus.SOLVER_ERROR,
    TerminationCondition.licensingProblems: ClearingStatus.SOLVER_ERROR,
    TerminationCondition.emptyModel: ClearingStatus.NO_CROSSING,
    TerminationCondition.unknown: ClearingStatus.SOLVER_ERROR,
}


HIGHS_TO_STATUS: dict[str, ClearingStatus] = {
    "kOptimal": ClearingStatus.CLEARED,
    "kInfeasible": ClearingStatus.INFEASIBLE,
    "kUnboundedOrInfeasible": ClearingStatus.INFEASIBLE,
    "kUnbounded": ClearingStatus.SOLVER_ERROR,
    "kTimeLimit": ClearingStatus.TIME_LIMIT,
    "kIterationLimit": ClearingStatus.SOLVER_ERROR,  # deterministic: not a wall-clock stop
    "kModelEmpty": ClearingStatus.NO_CROSSING,
}
"""highspy's ``HighsModelStatus`` names -> status; anything else is a SOLVER_ERROR."""

ITERATION_LIMIT_TERMINATIONS = frozenset(
    {"iterationLimit", "kIterationLimit", "Iteration limit reached"}
)
"""How pyomo and highspy name an iteration-limit stop (pyomo's condition, highspy's status
name and its ``modelStatusToString``): a SOLVER_ERROR, deterministic."""


def highs_status_of(model_status: object) -> ClearingStatus:
    """Map a highspy model status to PeerGrid's status.

    Parameters
    ----------
    model_status : object
        A ``highspy.HighsModelStatus`` member (or anything whose name ends like one).

    Returns
    -------
    ClearingStatus
        From :data:`HIGHS_TO_STATUS`; SOLVER_ERROR for anything else.
    """
    name = getattr(model_status, "name", str(model_status)).split(".")[-1]
    return HIGHS_TO_STATUS.get(name, ClearingStatus.SOLVER_ERROR)


def status_of(termination: TerminationCondition) -> ClearingStatus:
    """Map a pyomo termination condition to PeerGrid's status.

    Parameters
    ----------
    termination : TerminationCondition
        pyomo's termination condition.

    Returns
    -------
    ClearingStatus
        From :data:`TERMINATION_TO_STATUS`; SOLVER_ERROR for anything else.
    """
    return TERMINATION_TO_STATUS.get(termination, ClearingStatus.SOLVER_ERROR)
