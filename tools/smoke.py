"""The check after every deploy: the @smoke scenarios against a running gateway, stopping at the first failure.

    scripts/smoke URL [-D keys_dir=DIR] [-D NAME=VALUE ...] [behave arguments ...]

URL is the gateway's address; keys_dir is the keys folder scripts/keygen wrote for it (else SUITE_KEYS_DIR). Any
other suite option is passed on (`behave -D help` lists them): a scenario that needs what the deployment does not
offer (its database, the model stub's control API, its logs) is skipped with the option to pass. What the run
creates is retired at its end, as in any run.

A gateway that is down fails at once, with one line saying what is down (exit 2); otherwise the exit code is
behave's. The allure results and the JUnit files go where behave.ini says, as for any run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from support.harness import config as suite_config
from support.harness.config import SuiteSetupError
from support.stacks import make_stack
from tools.defines import define_args, parse_defines
from tools.project import project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/smoke", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("url", help="the gateway's address, e.g. https://gateway.example.test")
    parser.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE",
                        help="a suite option, as for behave (repeatable)")
    args, behave_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        defines = {**parse_defines(args.define), "stack": "external", "base_url": args.url}
        for folder in ("keys_dir", "config_repo", "logs_dir"):  # behave runs in the project's folder
            if defines.get(folder):
                defines[folder] = os.path.abspath(defines[folder])
        defines.setdefault("ready_timeout", "5")  # a deployment is up already, or it is not
        config = suite_config.load(defines)
        if not config.keys_dir:
            raise SuiteSetupError("the smoke scenarios sign admin and service tokens: add -D keys_dir=DIR (the "
                                  "folder scripts/keygen wrote for this deployment)")
        make_stack(config).up()  # the same check a run makes: a gateway that is down is said in one line
    except (ValueError, SuiteSetupError) as problem:
        sys.stderr.write(f"smoke: {problem}\n")
        return 2

    started = time.monotonic()
    command = [sys.executable, "-m", "behave", "--tags=@smoke", "--stop", *define_args(defines), *behave_args]
    done = subprocess.run(command, cwd=project_root(), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    outcome = "passed" if done.returncode == 0 else f"FAILED (behave exit {done.returncode})"
    print(f"smoke: {outcome} against {args.url} in {time.monotonic() - started:.1f} s", flush=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
