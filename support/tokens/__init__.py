"""Tokens: the key material of the keys folder (signing_keys), service and platform-admin tokens in business words
(service_tokens), checking user tokens against the published JWKS (jwks), and forged tokens (forgery).

Imports only support.harness (and nothing from support.database, its sibling)."""
