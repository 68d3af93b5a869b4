"""The project's hooks (<root>/environment.py), plus one for the self-check: after each scenario, note every
secret it handled in the file named by -D selfcheck.secrets_file, so the check can search the run's output
for them."""
import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("project_environment",
                                               Path(__file__).resolve().parents[2] / "environment.py")
project = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(project)

for _hook in ("before_all", "after_all", "before_feature", "after_feature", "before_rule", "after_rule",
              "before_scenario", "before_step", "after_step", "before_tag", "after_tag"):
    if hasattr(project, _hook):
        globals()[_hook] = getattr(project, _hook)


def after_scenario(context, scenario):
    target = context.config.userdata.get("selfcheck.secrets_file")
    state = getattr(context, "state", None)
    if target and state is not None:
        held = state.audit.secrets_handled()
        with open(target, "a", encoding="utf-8") as out:
            for value, kind in held.items():
                out.write(json.dumps({"kind": kind, "value": value, "scenario": scenario.name}) + "\n")
    if hasattr(project, "after_scenario"):
        project.after_scenario(context, scenario)
