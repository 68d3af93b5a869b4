"""The catalogue of deliberate faults in the reference gateway: each one a regression a real change could bring,
and the features that must catch it.

Every capability folder of features/ is named by at least one fault. A fault's text must occur exactly once in its
file (tools/prove/faults.py), so when the gateway changes, `scripts/prove --check` says which faults to update.
The faults marked `sample` are the ones CI runs on every build (scripts/prove --sample): cheap to catch, and
spread over the capabilities."""
from __future__ import annotations

from tools.prove.faults import Fault

F = "features/"


def fault(name, what, file, find, replace, *caught_by, sample=False, also=()) -> Fault:
    return Fault(name, what, f"gateway/{file}", find, replace, tuple(F + path for path in caught_by), sample, also)


CATALOGUE: list[Fault] = [
    # ---- audit ---------------------------------------------------------------------------------------------------
    fault("audit.request-id-dropped", "audit events no longer carry the request id of the request that made them",
          "audit.py", '"request_id": context.current_request_id(),', '"request_id": None,',
          "audit/audit.correlation.feature", sample=True),
    fault("audit.trace-dropped", "audit events no longer carry the caller's trace id",
          "audit.py", '"trace_id": context.current_trace_id()})', '"trace_id": None})',
          "audit/audit.correlation.feature"),
    fault("audit.denial-recorded-as-allowed", "a refused request is audited as allowed",
          "principals.py", 'audit.record(session, actor, action, target=target, outcome="denied",',
          'audit.record(session, actor, action, target=target, outcome="allowed",',
          "audit/audit.trail.feature"),
    fault("audit.key-issue-unaudited", "issuing an API key leaves no audit event of its own",
          "routers/keys.py", 'audit.record(session, principal.actor, "keys.create",',
          'audit.record(session, principal.actor, "keys.list",',
          "audit/audit.trail.feature"),
    fault("audit.pages-oldest-first", "the audit log pages oldest first (consistently, so paging still works)",
          "routers/audit_log.py", "query = query.where(AuditEvent.id < cursor)",
          "query = query.where(AuditEvent.id > cursor)", "audit/audit.queries.feature",
          also=(("order_by(AuditEvent.id.desc())", "order_by(AuditEvent.id.asc())"),), sample=True),
    fault("audit.range-end-inclusive", "a time range includes events stamped at its end",
          "routers/audit_log.py", "query = query.where(AuditEvent.at < until)",
          "query = query.where(AuditEvent.at <= until)", "audit/audit.queries.feature"),
    fault("audit.filter-by-outcome-ignored", "searching the audit log by outcome returns every outcome",
          "routers/audit_log.py", "(AuditEvent.outcome, outcome),", "(AuditEvent.outcome, None),",
          "audit/audit.queries.feature"),

    # ---- auth ----------------------------------------------------------------------------------------------------
    fault("auth.refresh-token-reusable", "a refresh token can be used any number of times",
          "routers/auth.py", "RefreshToken.id == claims[\"jti\"], RefreshToken.used_at.is_(None), ",
          "RefreshToken.id == claims[\"jti\"], ", "auth/auth.refresh.feature", sample=True),
    fault("auth.reuse-keeps-login", "replaying a refresh token no longer revokes the whole login",
          "routers/auth.py", "RefreshToken.family_id == claims.get(\"family\"),",
          "RefreshToken.family_id == \"(no family)\",", "auth/auth.refresh.feature"),
    fault("auth.login-tells-unknown-email", "a failed login says whether the email belongs to someone",
          "routers/auth.py", '"Login failed: the email or password is wrong."',
          '"Login failed: the email or password is wrong." if found else "Login failed: no such account."',
          "auth/auth.login.feature"),
    fault("auth.token-type-header-unchecked", "a refresh token's type header passes where an access token is "
          "expected (a later check still refuses it, without saying the type is wrong)",
          "security.py", 'if header.get("typ") != typ:', 'if header.get("typ") not in (typ, REFRESH_TYP):',
          "auth/auth.forged-tokens.feature"),
    fault("auth.retired-key-verifies", "tokens signed with a retired key keep working",
          "security.py", 'VERIFYING_STATES = ("active", "retiring")',
          'VERIFYING_STATES = ("active", "retiring", "retired")', "auth/auth.signing-key-rotation.feature"),
    fault("auth.expiry-unchecked", "an expired access token is still accepted",
          "security.py", '"strict_aud": True}, leeway=5)', '"strict_aud": True, "verify_exp": False}, leeway=5)',
          "auth/auth.forged-tokens.feature"),

    # ---- billing -------------------------------------------------------------------------------------------------
    fault("billing.finalize-posted-as-release", "a finalization is written to the ledger as a release",
          "services/ledger.py", '_post(session, "finalize", row.account_id,',
          '_post(session, "release", row.account_id,', "billing/billing.idempotency.feature",
          "billing/billing.reservations.feature", sample=True),
    fault("billing.reserve-beyond-credit", "a reservation larger than the available credit is accepted",
          "services/ledger.py", "HAS_CREDIT = ACCOUNTS.c.available_micros >= AMOUNT",
          "HAS_CREDIT = ACCOUNTS.c.available_micros + AMOUNT >= AMOUNT", "billing/billing.reservations.feature",
          sample=True),
    fault("billing.finalize-above-hold", "a service may finalize above what was reserved",
          "services/ledger.py", "at_least=0 if beyond_hold else actual)", "at_least=0)",
          "billing/billing.reservations.feature"),
    fault("billing.release-keeps-hold", "a released reservation's amount does not return to the available credit",
          "services/ledger.py", '_return_hold(session, row.account_id, row.id, row.amount_micros, "release", '
                                'request_id)',
          '_return_hold(session, row.account_id, row.id, row.amount_micros // 2, "release", request_id)',
          "billing/billing.reservations.feature"),
    fault("billing.idempotent-retry-runs-again", "a reservation retried with its Idempotency-Key holds twice",
          "services/idempotency.py", "    if replay is not None:\n        return *replay, True",
          "    if replay is not None and False:\n        return *replay, True",
          "billing/billing.idempotency.feature"),
    fault("billing.idempotency-key-body-unchecked", "a key reused for a different request replays the first answer",
          "services/idempotency.py", "if record.request_hash != digest:", "if record.request_hash is None:",
          "billing/billing.idempotency.feature"),
    fault("billing.anchor-mismatch-allowed", "another identity may use an anchored account",
          "routers/billing.py", "if account.identity_anchor is not None and anchor != account.identity_anchor:",
          "if account.identity_anchor is not None and anchor is None:", "billing/billing.identity-anchors.feature"),
    fault("billing.balances-held-and-spent-swapped", "an account's balances show what is held as spent",
          "services/ledger.py", '"held_micros": self.held_micros, "spent_micros": self.spent_micros}',
          '"held_micros": self.spent_micros, "spent_micros": self.held_micros}',
          "billing/billing.identity-anchors.feature"),
    fault("billing.mint-counted-twice", "a mint grows the balance by twice its amount",
          "services/ledger.py", "minted_micros=Account.minted_micros + amount, "
                                "available_micros=Account.available_micros + amount))",
          "minted_micros=Account.minted_micros + amount, available_micros=Account.available_micros + 2 * amount))",
          "billing/billing.minting.feature"),
    fault("billing.reconciliation-blind-to-available", "reconciliation no longer compares the available balance "
          "with the ledger", "services/ledger.py",
          '("available = ledger available", b.available_micros, p.get("available", 0)),',
          '("available = ledger available", b.available_micros, b.available_micros),',
          "billing/billing.reconciliation-corruption.feature"),
    fault("billing.expiry-never", "an unsettled reservation never expires",
          "services/ledger.py", 'RESERVATIONS.c.expires_at <= now).values(status="expired", settled_at=now))',
          'RESERVATIONS.c.expires_at <= now - timedelta(days=1)).values(status="expired", settled_at=now))',
          "billing/billing.expiry.feature"),
    fault("billing.expired-service-token-accepted", "an expired service token still moves money",
          "security.py", 'options={"require": ["exp", "aud", "iat", "iss"]}, leeway=5)',
          'options={"require": ["exp", "aud", "iat", "iss"], "verify_exp": False}, leeway=5)',
          "billing/billing.service-auth.feature"),

    # ---- budgets -------------------------------------------------------------------------------------------------
    fault("budgets.limit-ignores-the-request", "the budget check leaves out the request's own cost",
          "services/ledger.py", "ACCOUNTS.c.held_micros + ACCOUNTS.c.spent_micros + AMOUNT <= BUDGET_LIMIT)",
          "ACCOUNTS.c.held_micros + ACCOUNTS.c.spent_micros <= BUDGET_LIMIT)", "budgets/budgets.limits.feature",
          sample=True),
    fault("budgets.budget-quartered", "concurrent requests are refused while a quarter of the budget is used",
          "services/ledger.py", "ACCOUNTS.c.held_micros + ACCOUNTS.c.spent_micros + AMOUNT <= BUDGET_LIMIT)",
          "4 * (ACCOUNTS.c.held_micros + ACCOUNTS.c.spent_micros + AMOUNT) <= BUDGET_LIMIT)",
          "budgets/budgets.limits.feature"),
    fault("budgets.completion-at-prompt-price", "completion tokens are charged at the prompt price",
          "services/routing.py", "completion_tokens * completion_price_per_1k) / 1000)",
          "completion_tokens * prompt_price_per_1k) / 1000)", "budgets/budgets.charging.feature"),
    fault("budgets.rate-limit-off-by-one", "a key may send one request more than its rate limit",
          "runtime.py", "if len(hits) >= limit:", "if len(hits) > limit:", "budgets/budgets.rate-limits.feature"),
    fault("budgets.retry-after-too-soon", "Retry-After tells a rate-limited key to come back before it may",
          "runtime.py", "return max(1, math.ceil((hits[0] + window_seconds - now) * 1000))",
          "return max(1, math.ceil((hits[0] + window_seconds - now) * 1000) // 3)",
          "budgets/budgets.rate-limits.feature"),
    fault("budgets.prompt-bound-counts-characters", "the hold counts a prompt's characters, not its bytes, so a "
          "prompt in Chinese is held below its usage", "services/token_bounds.py",
          'return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))', "return len(text)",
          "budgets/budgets.request-shapes.feature"),

    # ---- clients -------------------------------------------------------------------------------------------------
    fault("clients.models-listed-unfiltered", "an application is shown models its org may not use",
          "routers/chat.py", "return [m for m in models if org.allowed_models is None or m.name in org.allowed_models]",
          "return list(models)", "routing/routing.requests.feature"),
    fault("clients.idempotency-key-ignored", "a completion retried with its Idempotency-Key is run and charged again",
          "routers/chat.py", 'key = request.headers.get("idempotency-key")', 'key = None',
          "clients/clients.retries.feature", sample=True),
    fault("clients.stream-usage-withheld", "a client that asks for usage in a stream never gets it",
          "routers/chat.py", 'bool((body.get("stream_options") or {}).get("include_usage")), claim, started,',
          'False, claim, started,', "clients/clients.openai-sdk.feature"),

    # ---- convergence ---------------------------------------------------------------------------------------------
    fault("convergence.self-heal-ignored", "a drifted value is never restored, whatever the policy",
          "config_sync/convergence.py", 'heal = bool(policy.get("self_heal", heal_all))', "heal = False",
          "convergence/convergence.drift.feature"),
    fault("convergence.removed-org-unreported", "an org removed from git is neither pruned nor reported",
          "config_sync/convergence.py", 'drift.append(_drift("org", slug, "exists", False, True))', "pass",
          "convergence/convergence.pruning.feature"),
    fault("convergence.interval-eight-times", "the reconcile interval is eight times what is configured",
          "config_sync/reconciler.py", 'return float(settings.get("reconcile_interval_seconds") or '
                                       'self.rt.settings.default_reconcile_interval_seconds)',
          'return 8 * float(settings.get("reconcile_interval_seconds") or '
          'self.rt.settings.default_reconcile_interval_seconds)', "convergence/convergence.budgets.feature"),
    fault("convergence.broken-commit-synced", "a commit that cannot be applied is reported as Synced",
          "config_sync/reconciler.py", "elif error or drift or state.revision != state.target_revision:",
          "elif drift:", "convergence/convergence.invalid-commits.feature", sample=True),
    fault("convergence.changed-orgs-not-applied", "a budget committed to git is not applied",
          "config_sync/convergence.py", '    if changed_orgs:\n        existing = {o.slug: o',
          '    if changed_orgs and False:\n        existing = {o.slug: o', "convergence/convergence.budgets.feature"),

    # ---- health --------------------------------------------------------------------------------------------------
    fault("health.readiness-skips-database", "the readiness probe no longer reports the database",
          "routers/health.py", '        rt.db.ping()\n        checks["database"] = "ok"',
          '        rt.db.ping()', "health/health.probes.feature", sample=True),
    fault("health.reservations-never-counted", "the metrics report no reservation in any state",
          "metrics.py", "counts.update(self._fresh_counts())", "self._fresh_counts()",
          "health/health.probes.feature"),
    fault("health.liveness-uncounted", "requests are no longer counted in the metrics",
          "metrics.py", "REQUESTS.labels(method, route, str(status)).inc()", "REQUESTS.labels(method, route, "
                                                                           "str(status))",
          "health/health.probes.feature"),
    fault("health.jwks-wrong-curve", "the published keys say they are another curve",
          "security.py", 'return {"kty": "EC", "crv": "P-256",', 'return {"kty": "EC", "crv": "P-384",',
          "health/health.signing-keys.feature"),

    # ---- journeys ------------------------------------------------------------------------------------------------
    fault("journeys.chat-audited-outside-its-org", "a chat completion is audited, but not in its org's log",
          "routers/chat.py", 'return {"actor": self.principal.actor, "target": f"model:{self.model}", '
                             '"org": self.org_slug}',
          'return {"actor": self.principal.actor, "target": f"model:{self.model}", "org": None}',
          "journeys/journeys.first-request.feature"),

    # ---- keys ----------------------------------------------------------------------------------------------------
    fault("keys.revoked-key-works", "a revoked API key keeps working",
          "principals.py", "    if found.revoked_at is not None:\n        return Refusal(401,",
          "    if found.revoked_at is not None and False:\n        return Refusal(401,",
          "keys/keys.lifecycle.feature", sample=True),
    fault("keys.secret-stored-in-clear", "the gateway keeps an API key's secret instead of its hash",
          "routers/keys.py", "key_hash=sha256_hex(secret),", "key_hash=sha256_hex(secret) + ':' + secret,",
          "keys/keys.lifecycle.feature"),

    # ---- orgs ----------------------------------------------------------------------------------------------------
    fault("orgs.invite-above-own-role", "an admin may invite someone as owner",
          "routers/people.py", "if not outranks_or_equals(role, body.role):", "if body.role == 'viewer' and False:",
          "orgs/orgs.escalation.feature"),
    fault("orgs.last-owner-steps-down", "the last owner of an org may step down",
          "routers/people.py", 'elif membership.role == "owner" and body.role != "owner" and _owners(session, '
                               'org.id) <= 1:',
          'elif membership.role == "owner" and body.role != "owner" and _owners(session, org.id) < 1:',
          "orgs/orgs.owners.feature"),
    fault("orgs.viewer-reads-audit", "a viewer may read the org's audit log",
          "permissions.py", '"audit.read": "admin",', '"audit.read": "viewer",', "orgs/orgs.role-matrix.feature"),
    fault("orgs.revoke-any-orgs-key", "an org's admin may revoke another org's API key",
          "routers/keys.py", "key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org.id))",
          "key = session.scalar(select(ApiKey).where(ApiKey.id == key_id))", "orgs/orgs.tenant-isolation.feature",
          sample=True),
    fault("orgs.unknown-fields-ignored", "a request carrying a field it does not take is accepted, the field ignored",
          "bodies.py", 'model_config = ConfigDict(extra="forbid")', 'model_config = ConfigDict(extra="ignore")',
          "orgs/orgs.escalation.feature"),
    fault("orgs.retired-org-keys-work", "a deactivated org's API keys keep working",
          "routers/admin_cleanup.py", "keys = session.execute(update(ApiKey).where(ApiKey.org_id == org_id, "
                                      "ApiKey.revoked_at.is_(None))",
          "keys = session.execute(update(ApiKey).where(ApiKey.org_id == None, ApiKey.revoked_at.is_(None))",
          "orgs/orgs.retirement.feature"),

    # ---- performance ---------------------------------------------------------------------------------------------
    fault("performance.settlement-returns-a-micro-more", "each settled chat completion gives back one micro-USD "
          "more than it held, so money appears under load", "services/ledger.py",
          'session.connection().execute(_SETTLE_ACCOUNT, {"account": row.account_id, "held": amount, "spent": '
          'actual,\n                                                   "returned": amount - actual})',
          'session.connection().execute(_SETTLE_ACCOUNT, {"account": row.account_id, "held": amount, "spent": '
          'actual,\n                                                   "returned": amount - actual + 1})',
          "performance"),

    # ---- resilience ----------------------------------------------------------------------------------------------
    fault("resilience.outage-is-a-server-error", "a database outage answers with a server error instead of "
          "'unavailable'", "errors.py", "DATABASE_UNAVAILABLE = (sa_exc.OperationalError, ",
          "DATABASE_UNAVAILABLE = (", "resilience/resilience.database-outage.feature"),
    fault("resilience.backend-timeout-ignored", "the gateway waits ten times a backend's timeout",
          "services/routing.py", "timeout = aiohttp.ClientTimeout(total=seconds,",
          "timeout = aiohttp.ClientTimeout(total=10 * seconds,", "resilience/resilience.hung-backend.feature"),
    fault("resilience.bad-json-is-a-server-error", "a body that is not JSON fails with a server error",
          "routers/chat.py", "except (ValueError, UnicodeDecodeError) as exc:", "except UnicodeDecodeError as exc:",
          "resilience/resilience.malformed-burst.feature", sample=True),
    fault("resilience.refusal-messages-vague", "refusals of malformed bodies no longer say what is wrong",
          "errors.py", '        text = f"Field \'{field}\' is required."',
          '        text = "The request is not valid."', "resilience/resilience.malformed-burst.feature"),
    fault("resilience.crash-loses-journal", "a completion answered just before a crash is never charged",
          "routers/chat.py", "        await rt.settlements.owe(entry)\n    except OSError as exc:",
          "        pass\n    except OSError as exc:", "resilience/resilience.settlement-journal.feature"),

    # ---- routing -------------------------------------------------------------------------------------------------
    fault("routing.breaker-never-closes", "a backend's circuit stays half-open after its probe is answered",
          "services/circuit_breakers.py", 'self._move(breaker, "closed", "the probe succeeded", changes)', "pass",
          "routing/routing.circuit-breaker.feature"),
    fault("routing.refusal-falls-back", "a backend's refusal (4xx) is sent on to the next backend",
          "services/routing.py", 'if attempt.outcome in ("ok", "client_error"):', 'if attempt.outcome == "ok":',
          "routing/routing.fallback.feature"),
    fault("routing.traceparent-not-forwarded", "the caller's trace is not passed on to the model's backend",
          "services/routing.py", 'headers["traceparent"] = correlation.child_traceparent()',
          "headers[\"traceparent\"] = f\"00-{'0' * 31}1-{'0' * 15}1-01\"", "routing/routing.requests.feature",
          sample=True),
    fault("routing.request-id-not-forwarded", "the request id is not passed on to the model's backend",
          "services/routing.py", 'headers["X-Request-ID"] = correlation.request_id', "pass",
          "audit/audit.correlation.feature"),
    fault("routing.disallowed-model-served", "an org is served a model it may not use",
          "routers/chat.py", "if row.model_name is None or (row.allowed_models is not None and row.model_name not in "
                             "row.allowed_models):",
          "if row.model_name is None:", "routing/routing.requests.feature"),
    fault("routing.no-fallback-on-5xx", "a backend's server error is returned instead of trying the next backend",
          "services/routing.py", '    if status >= 500:\n        return ""', '    if status >= 600:\n        return ""',
          "routing/routing.fallback.feature"),
    fault("routing.route-order-reversed", "a model's backends are tried last first",
          "services/routing.py", "    for backend in backends or []:\n        name = backend_name(backend)",
          "    for backend in reversed(backends or []):\n        name = backend_name(backend)",
          "convergence/convergence.model-routes.feature"),
    fault("routing.zero-max-tokens-sent-on", "a request for zero tokens is sent on to the backend",
          "services/token_bounds.py", "not 1 <= value <= MAX_TOKENS_LIMIT):", "not 0 <= value <= MAX_TOKENS_LIMIT):",
          "resilience/resilience.malformed-burst.feature"),

    # ---- scale (needs several gateway processes: -D database_url=postgresql://... -D gateway_workers=2) ---------
    fault("scale.rate-limits-per-process", "each gateway process counts a key's requests on its own, so a burst "
          "over several processes gets the limit once per process", "settings.py",
          'return self.rate_limit_store == "database" or (self.rate_limit_store == "auto" and self.on_postgresql)',
          'return self.rate_limit_store == "database"', "scale/scale.limits.feature"),

    # ---- security ------------------------------------------------------------------------------------------------
    fault("security.guessing-not-slowed", "password guessing is never throttled",
          "throttle.py", "if hits is None or len(hits) < self.limit:", "if True:",
          "security/security.credential-guessing.feature", sample=True),
    fault("security.answers-sniffable", "answers no longer forbid content sniffing",
          "middleware.py", 'out["X-Content-Type-Options"] = "nosniff"', 'out["X-Content-Type-Options"] = "sniff"',
          "security/security.secrets.feature"),
    fault("security.removed-members-keys-stay", "a removed member's API keys keep spending the org's credit",
          "routers/people.py", "    if keys:\n        session.execute(update(ApiKey)",
          "    if keys and False:\n        session.execute(update(ApiKey)", "security/security.invitations.feature"),
    fault("security.service-token-lifetime-unbounded", "a service token may be minted to last for years",
          "security.py", "if not isinstance(lifetime, (int, float)) or lifetime > max_lifetime_seconds:",
          "if not isinstance(lifetime, (int, float)):", "security/security.service-tokens.feature"),
    fault("security.invitation-guesses-plenty", "an invitation takes thirty wrong passwords before it is used up",
          "settings.py", "invitation_max_failed_attempts: int = 3", "invitation_max_failed_attempts: int = 30",
          "security/security.invitations.feature"),

    # ---- streaming -----------------------------------------------------------------------------------------------
    fault("streaming.usage-ignored", "a streamed completion is charged by its text, not the usage its backend "
          "reports", "services/streaming.py",
          "        if isinstance(usage, dict):\n            self.tally.usage = usage",
          "        if isinstance(usage, dict):\n            pass", "streaming/streaming.answers.feature", sample=True),
    fault("streaming.mid-stream-failure-silent", "a backend dying mid-stream ends the stream without an error",
          "services/streaming.py", "                await self._pass_on(send, error_event(f\"Backend",
          "                await (lambda *a: asyncio.sleep(0))(send, error_event(f\"Backend",
          "streaming/streaming.interruptions.feature"),
    fault("streaming.done-withheld", "a finished stream never says [DONE]",
          "services/streaming.py", "                    await self._pass_on(send, DONE)\n",
          "                    pass\n", "streaming/streaming.answers.feature"),
]
