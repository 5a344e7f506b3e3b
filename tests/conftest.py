import pytest

from trajalign.envs import builtin_scenarios, load_scenario

TOOL_USE_SCENARIOS = [name for name in builtin_scenarios() if load_scenario(name).kind == "tool_use"]


@pytest.fixture(params=TOOL_USE_SCENARIOS)
def tool_use_scenario(request):
    return load_scenario(request.param)
