"""The reconciler: converge the gateway to the config repository's branch head.

Layout of the repository (see docs/contract.md, Declarative configuration)::

    gateway.yaml          self_heal, prune, reconcile_interval_seconds, circuit_breaker {failures, window_seconds,
                          cooldown_seconds}
    orgs/<slug>.yaml      name, budget_micros, models (allowlist), rate_limit {requests, window_seconds},
                          sync_policy {self_heal}  (a per-org override of the global switch)
    models/<name>.yaml    price {prompt_per_1k_micros, completion_per_1k_micros}, backends [{name, url,
                          timeout_seconds?, circuit_breaker?}] in route order, default_max_tokens

One pass:
1. read the branch head (git CLI; blobs are cached by id, so an unchanged file is never read or parsed twice);
2. validate every file; any error rejects the whole commit (the last good revision stays applied, `error` names
   the file and line);
3. apply the files that changed since the applied revision (an object whose file did not change is not touched,
   so a commit to one org never overwrites drift on another);
4. compare every declared field with the effective value: drift. Self-heal (global, or per org with
   `sync_policy: {self_heal: true}`) restores it and audits `config.drift_corrected`; otherwise it is reported;
5. objects managed from git whose file is gone are pruned when `prune` is on, else kept and reported as drift
   on the field `exists` (declared false, effective true).

Modules, each importing only those above it:
    validation    one file: YAML, duplicate keys, the schema of settings, orgs and models (ConfigError)
    repository    git: branch heads, trees, blobs, whole revisions read as Declared (steps 1-2)
    fields        how each declared field maps onto a row: read, write, compare, fingerprint
    convergence   apply changed files, find and heal drift, prune (steps 3-5)
    reconciler    the pass itself and its status (Reconciler, status_json)
"""
from gateway.config_sync.convergence import apply_changes, apply_model, apply_org, converge
from gateway.config_sync.fields import MODEL_COLUMNS, MODEL_FIELDS, ORG_COLUMNS, ORG_FIELDS
from gateway.config_sync.reconciler import Pass, Reconciler, status_json
from gateway.config_sync.repository import MAX_ERRORS_SHOWN, Declared, RepoReader, list_tree, read_blobs
from gateway.config_sync.validation import (DEFAULT_MAX_TOKENS, MODEL_NAME, SETTINGS_FILE, SLUG, URL, ConfigError,
                                            Invalid, Loader, parse_file, validate_model, validate_org,
                                            validate_settings)

__all__ = ["DEFAULT_MAX_TOKENS", "MAX_ERRORS_SHOWN", "MODEL_COLUMNS", "MODEL_FIELDS", "MODEL_NAME", "ORG_COLUMNS",
           "ORG_FIELDS", "SETTINGS_FILE", "SLUG", "URL", "ConfigError", "Declared", "Invalid", "Loader", "Pass",
           "Reconciler", "RepoReader", "apply_changes", "apply_model", "apply_org", "converge", "list_tree",
           "parse_file", "read_blobs", "status_json", "validate_model", "validate_org", "validate_settings"]
