"""Load and faults: many requests at the same instant (burst, the one way to send them), bounded load runs
(load, Locust in a child process) and the faults the resilience features inject (faults).

Imports the packages below it, support.domain included; never support.scenario."""
