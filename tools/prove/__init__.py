"""Prove the suite's strength: break the reference gateway on purpose and see whether the suite notices.

    scripts/prove [--sample] [--fault NAME]... [-j N] [--worktree] [--wide] [-D NAME=VALUE]...
    scripts/prove --list | --check
    scripts/prove --proxy [--target URL -D NAME=VALUE...] [--corruption NAME]...

Faults (the default): a catalogue of small deliberate faults in gateway/ (tools/prove/catalogue.py: a skipped
check, a wrong comparison, a dropped audit event, a missing posting, a header not forwarded...), each applied in
turn to a temporary copy of the repository (the checkout's files are never touched), with the features expected to
catch it run by behave --stop on the copy's embedded stack. For each fault it prints whether the suite failed,
which step failed and whether that step's failure message carries the request id; then a control run without any
fault confirms that the scenarios which failed pass when nothing is broken; then the kill rate and the survivors.
They are written to reports/prove/ (results.json, summary.json): the acceptance suite's Allure report shows the
kill rate in its environment, and scripts/test prints it in its summary.

Corruptions (--proxy): the gateway is left as it is and the suite runs through a proxy in front of it that breaks
its answers one way at a time (a status flipped, a header dropped, a number changed in a JSON body, a stream cut
short); against --target URL (any deployment, with the -D options that describe it) or, by default, a stack
started here. It shows which broken answers the suite would catch on a team's own deployment.

Exit codes: 0 every fault (or corruption) was caught; 1 one survived (or its run broke or timed out); 2 the
catalogue no longer fits the gateway, or the run could not start. See docs/proving.md.
"""
