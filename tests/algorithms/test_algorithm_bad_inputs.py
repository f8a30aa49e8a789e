"""Every algorithm's bad inputs (from its AlgorithmInfo) are refused with a clear message."""

import pytest
from algorithm_info import ALGORITHM_INFOS, GENERIC_BAD_INPUTS

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError
from fedopt.run import execute

CASES = [
    pytest.param(info, bad, id=f"{name}-{bad.id}")
    for name, info in sorted(ALGORITHM_INFOS.items())
    for bad in info.bad_inputs + GENERIC_BAD_INPUTS
]


def test_every_algorithm_has_a_bad_input_of_its_own() -> None:
    assert all(info.bad_inputs for info in ALGORITHM_INFOS.values())


@pytest.mark.parametrize(("info", "bad"), CASES)
def test_bad_input_is_refused(info, bad) -> None:
    raw = info.bad_raw(bad)
    with pytest.raises(ConfigError) as err:
        plan = compile_plan(validate(raw))
        if bad.stage == "run":  # validate accepts it (a gap the record keeps visible) ...
            execute(plan)  # ... and the run refuses it before its first step
    msg = str(err.value)
    missing = [m for m in bad.match if m not in msg]
    assert not missing, f"{missing} not in: {msg}"
    if bad.stage == "run":  # when compile_plan learns to refuse it, set stage="compile"
        compile_plan(validate(raw))
