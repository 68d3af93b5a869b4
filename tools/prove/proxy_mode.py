"""scripts/prove --proxy: the suite run through a corrupting proxy in front of a deployment, one corruption at a
time, to see which broken answers it would catch there. The gateway itself is not changed.

Against --target URL (with the -D options that describe that deployment, as for `-D stack=external`), or, without
it, a stack started here from the -D options (the embedded one by default). Each worker has a proxy of its own; a
control run through a proxy that corrupts nothing confirms the scenarios that caught something."""
from __future__ import annotations

import queue
import secrets
import threading
import time
from pathlib import Path

from tools.defines import parse_defines
from tools.prove.corruptions import CORRUPTIONS, Corruption
from tools.prove.proxy import CorruptingProxy
from tools.prove.report import closing_lines, summary, verdict_line, write
from tools.prove.verdicts import (KILLED, NOT_RUN, SURVIVED, Verdict, behave_command, judge, mark_unproven, read_report,
                                  run_behave)
from tools.prove.workspace import ROOT


def add_arguments(options) -> None:
    group = options.add_argument_group("corruptions (--proxy)")
    group.add_argument("--proxy", action="store_true",
                       help="run the suite through a proxy that corrupts the answers of a deployment, one way at a "
                            "time, instead of breaking the gateway")
    group.add_argument("--target", metavar="URL",
                       help="the deployment behind the proxy (default: a stack started here from the -D options)")
    group.add_argument("--corruption", action="append", default=[], metavar="NAME",
                       help="only this corruption (repeatable)")


def list_corruptions() -> None:
    for number, corruption in enumerate(CORRUPTIONS, start=1):
        print(f"{number:>3} {corruption.name}: {corruption.what}\n      caught by {', '.join(corruption.caught_by)}")


def _start_stack(defines: dict[str, str]):
    """A stack started here: (the stack, its base URL, the -D options that use it as external)."""
    from support.stacks import standalone  # the suite's library, only when a stack is started here
    stack, endpoints = standalone.start(defines)
    return stack, endpoints.base_url, standalone.external_defines(endpoints, stack)


def _try(proxy: CorruptingProxy, corruption: Corruption | None, targets: list[str], stack_defines: dict[str, str],
         logs: Path, timeout: float, stop: bool = True) -> Verdict:
    name = corruption.name if corruption else "control"
    rid = f"px{secrets.token_hex(3)}"
    report, log = logs / f"{name}.json", logs / f"{name}.log"
    proxy.use(corruption)
    defines = [f"{name}={value}" for name, value in {**stack_defines, "base_url": proxy.url}.items()]
    code, seconds = run_behave(ROOT, behave_command(targets, report, rid, defines, stop=stop), log, timeout)
    verdict = judge(name, targets, code, seconds, read_report(report), rid, log)
    if corruption is not None and verdict.outcome == SURVIVED and proxy.corrupted == 0:
        verdict.detail = "the proxy found no answer to corrupt in these features"
    return verdict


def run(args) -> int:
    if args.list:
        list_corruptions()
        return 0
    chosen = [c for c in CORRUPTIONS if not args.corruption or c.name in args.corruption]
    if not chosen:
        print(f"scripts/prove: no corruption named {', '.join(args.corruption)} (scripts/prove --proxy --list)")
        return 2
    defines = parse_defines(args.define)
    stack = None
    if args.target:
        target, stack_defines = args.target, {**defines, "stack": "external"}
    else:
        stack, target, stack_defines = _start_stack(defines)
    logs = args.results / "proxy-logs"
    print(f"scripts/prove --proxy: {len(chosen)} corruptions of the answers of {target}, {args.jobs} at a time; "
          f"logs in {logs}", flush=True)
    started, printing, verdicts, pending = time.monotonic(), threading.Lock(), {}, queue.Queue()
    for corruption in chosen:
        pending.put(corruption)
    proxies = [CorruptingProxy(target).start() for _ in range(max(1, args.jobs))]

    def worker(proxy: CorruptingProxy) -> None:
        while True:
            try:
                corruption = pending.get_nowait()
            except queue.Empty:
                return
            verdict = _try(proxy, corruption, list(corruption.caught_by), stack_defines, logs, args.timeout)
            with printing:
                verdicts[corruption.name] = verdict
                print(verdict_line(len(verdicts), len(chosen), verdict), flush=True)

    try:
        threads = [threading.Thread(target=worker, args=(proxy,)) for proxy in proxies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ordered = [verdicts[c.name] for c in chosen if c.name in verdicts]
        checked = None if args.no_control else _control(proxies[0], ordered, stack_defines, logs, args.timeout)
    finally:
        for proxy in proxies:
            proxy.stop()
        if stack is not None:
            stack.down()
    result = summary(ordered, mode="proxy", commit=f"answers of {target}", seconds=time.monotonic() - started,
                     catalogue_size=len(CORRUPTIONS))
    write(args.results / "proxy", ordered, result, checked)
    for line in closing_lines(result):
        print(line)
    return 0 if all(v.outcome in (KILLED, NOT_RUN) for v in ordered) else 1


def _control(proxy: CorruptingProxy, verdicts: list[Verdict], stack_defines: dict[str, str], logs: Path,
             timeout: float) -> Verdict | None:
    locations = sorted({v.scenario for v in verdicts if v.outcome == KILLED and v.scenario})
    if not locations:
        return None
    checked = _try(proxy, None, locations, stack_defines, logs, timeout, stop=False)
    unproven = mark_unproven(verdicts, read_report(logs / "control.json"), "through a proxy that corrupts nothing")
    print(f"control run through a proxy that corrupts nothing ({len(locations)} scenarios, {checked.seconds:.0f} s): "
          + (f"not proven: {', '.join(unproven)}" if unproven else "every scenario that caught a corruption passes"),
          flush=True)
    return checked
