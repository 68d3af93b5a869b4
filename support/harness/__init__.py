"""The harness: what every other part of the suite stands on. Configuration (one place: -D, then SUITE_*
variables, then defaults), names unique to a scenario, the scenario's typed world, polling waits, money in
sentences and micro-USD, masking secrets, and the step types behave parses sentences with.

Imports nothing else of support (the bottom of the direction). The world names result types made higher up
only under TYPE_CHECKING, for annotations."""
