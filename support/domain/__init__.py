"""The gateway's capabilities as business operations, one service class per concept, each built from what it
needs (the API client, the world, the namespace, the database...): the platform API, identity (people, tokens,
keys, signing-key rotation), tenancy, roles, billing, budgets, rate limits, model routes and the stub's backends,
the audit trail, org ledgers and declarations in git. support/scenario.py builds them on first use.

Imports support.harness, client, tokens, database and stacks; never support.stress or support.scenario."""
