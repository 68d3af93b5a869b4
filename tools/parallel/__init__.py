"""Run the acceptance suite in parallel: N behave workers on two stacks, one summary and one exit code.

    scripts/run-parallel [-j N] [--tags EXPR]... [-D NAME=VALUE]... [PATH...]
                         [--shard I/N] [--order defined|random] [--seed S] [--list] [--timings FILE]
                         [--serial auto|private|after]
    scripts/run-parallel --check-results DIR... [--tags EXPR]... [PATH...]

What it does:
  1. Collects the scenarios that the paths and tags select (a behave dry run; behave.ini's default tags
     apply when no --tags is given), one entry per scenario and per outline row, as FILE:LINE.
  2. --shard I/N keeps the I-th of N deterministic parts: scenarios sorted by a hash of FILE:LINE:NAME and
     dealt out (weighted by --timings FILE when given, the same file on every machine), so N machines
     together run each scenario exactly once.
  3. Of the N job slots, one is the private worker: one behave process that brings up a stack of its own
     from the same -D options (so it may stop, restart or reconfigure it). It runs every scenario tagged
     @serial (--serial-tag), first and one at a time. The other N-1 workers are plain behave processes
     against one shared stack that the runner starts (-D stack=local by default; -D
     database_url=postgresql://... gives each stack a fresh database of its own on that server), as
     -D stack=external. The ordinary scenarios wait in one queue, longest first (by the previous runs'
     durations, reports/timings-j<N>.json, over the committed baseline): each worker, the private one once its
     @serial ones are done, takes the next whenever it is free, so the workers end together on any machine.
     The private worker takes from the long end (mostly waits, like its @serial ones), the others from the
     short end (busy work), so that one worker's waits fall beside another's work; they meet in the middle.
     With --order random they are dealt out in advance instead, in the seed's order, so the seed repeats
     who runs what. The private worker starts at once, beside the shared stack and its workers; the shared
     stack is stopped as soon as its workers are done.
     With -j 1 the private worker is the only one: everything runs in one process on one stack.
     On a stack the runner cannot duplicate (-D stack=external: the "own" stack would be the same
     deployment) the @serial scenarios run afterwards instead, alone, in one process (--serial after).
  4. All workers write into the same allure-results folder (behave.ini) and into reports/junit/<worker>;
     each worker's output goes to reports/parallel/<worker>.log.
  5. Prints one summary (scenarios passed/failed per worker and in total) and exits 0 only if every
     selected scenario passed and every worker exited cleanly.

Options:
  -j, --jobs N        workers, the private one included (default: the number of cores)
  -t, --tags EXPR     behave tag expression (repeatable; all must hold)
  -D NAME=VALUE       suite option, passed to the stacks and to every worker (repeatable)
  --shard I/N         run only the I-th of N parts of the selection (1-based)
  --order random      shuffle scenarios across and within workers (features, scenarios and outline rows);
  --seed S            ...with this seed (printed; default: a new one each run). --seed implies random.
  --list              print the plan (workers and their scenarios) and exit without running anything
  --timings FILE      durations to weigh shards by (a reports/timings.json from an earlier run); without
                      it every scenario weighs the same when sharding, so all machines agree
  --serial-tag TAG    tag of the scenarios that must run alone on a stack of their own (default: serial)
  --serial WHEN       private: a private worker as above; after: no private worker, the @serial scenarios
                      run after all the others, alone; auto (default): private unless -D stack=external
  --check-results DIR verify that the Allure results in DIR (merged from several runs or shards) hold
                      each selected scenario exactly once; exit 1 if not
  Other options starting with '-' (e.g. --stop, -n NAME, -e PATTERN, --no-capture) go to behave as they are;
  give any other behave option that takes a value as --option=VALUE.

Outputs: allure-results/ (cleared first), reports/junit/<worker>/, reports/parallel/{plan.json, <worker>.log,
<worker>.json, outcomes.json, queue/ (the queue, and who took each scenario)}, reports/timings.json and
timings-j<N>.json (durations kept for the next run's order: a run weighs by what runs at its own -j measured
first).
Exit codes: 0 all passed, 1 a scenario failed or was not run, 2 the run could not start (bad options, no
stack, behave could not collect the scenarios).

Modules: cli (options, main), run (one run from plan to summary), planning (shards, balancing, workers' lists),
history (durations of earlier runs), workers (behave processes: start, wait, stop, outcomes), results (summary,
--check-results), model (scenarios, workers, paths); inside behave processes: collect (the dry run that lists
the selection), worker (a worker's behave, ending without the interpreter's teardown) and ordered_runner (runs
a worker's scenarios in the planned order, and takes from the queue).
"""
