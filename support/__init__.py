"""The acceptance suite's library. It talks to the gateway over HTTP and SQL only: never import `gateway`.

Packages, bottom to top; each imports only the ones below it (tests/support/test_scenario_state.py checks):

    harness   configuration, namespaces, the scenario's typed world, waits, money, masking, step types
    client    the API client and its evidence, assertions quoting exchanges, the Allure formatter, the dossier
    tokens    signing keys from the keys folder, service and admin tokens, JWKS checks, forged tokens
    database  the gateway's live schema reflected: seeding, reading the ledger, conservation checks
    stacks    where the gateway runs: local (embedded), compose, external; the faults a stack can take
    domain    the gateway's capabilities as business operations, one service class each
    stress    many requests at once, load runs, faults injected while traffic flows
    scenario.py  SuiteRun and ScenarioState: the only things hung on behave's context
"""
