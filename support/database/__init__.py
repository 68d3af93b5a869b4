"""The gateway's database as the suite sees it: tables reflected from the live schema (reflection), seeded in
business terms (seeding), an org's money read back (spend) and checked for conservation (conservation).

Imports only support.harness (and nothing from support.tokens, its sibling)."""
