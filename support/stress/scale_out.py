"""What the @scale scenarios do and check: a deployment of several gateway processes (worker processes, replicas
behind a load balancer) keeps every limit as one gateway would. Requests are spread over the processes
(support.stress.process_spread); the checks read the answers, the ledger and the audit log.

Imports support.domain and the layers below."""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable

from support.client.api import Exchange, Request
from support.client.assertions import expect_equal, expect_true, problem_field
from support.database.conservation import AccountLedger
from support.domain.billing_api import Billing
from support.domain.budgets import Budgets
from support.domain.chat_retries import ChatRetries
from support.domain.identity import Identity
from support.domain.org_ledgers import OrgLedgers
from support.harness.waits import wait_until
from support.harness.world import Reservation, World
from support.stress.process_spread import ProcessSpread, Sent, SteadyTraffic, served_by, spread_summary

TRAFFIC_THREADS = 4  # requests in flight at any moment of the steady traffic
AFTER_THE_KILL = 24  # requests sent after a replica was killed that must have ended before the traffic stops


class ScaleOut:
    def __init__(self, spread: ProcessSpread, world: World, budgets: Budgets, retries: ChatRetries,
                 identity: Identity, billing: Billing, ledgers: OrgLedgers, stack, add_cleanup: Callable):
        self.spread, self.world, self.budgets, self.retries = spread, world, budgets, retries
        self.identity, self.billing, self.ledgers, self.stack = identity, billing, ledgers, stack
        self.add_cleanup = add_cleanup
        self.api = identity.api

    # ---- bursts over every process ---------------------------------------------------------------------------------

    def expect_burst_spread(self) -> None:
        self.spread.expect_several(self.world.burst.exchanges, "the burst")

    def expect_rate_limited_exactly(self, served: int, refused: int) -> None:
        """Exactly `served` answered and `refused` refused as rate limited (429 rate_limit_exceeded), nothing else."""
        burst = self.world.burst.exchanges
        answered = [e for e in burst if e.status == 200]
        limited = [e for e in burst if e.status == 429 and problem_field(e, "code") == "rate_limit_exceeded"]
        summary = spread_summary(burst)
        expect_equal(len(answered), served, f"the number of completions served out of the burst of {len(burst)} "
                     f"(the key's rate limit, counted across every process; {summary})")
        expect_equal(len(limited), refused, f"the number refused as rate limited ({summary})")

    # ---- an Idempotency-Key retry on another process ------------------------------------------------------------

    def retry_elsewhere(self, key: str, words: str) -> Exchange:
        """The first request's body again with its key, in bursts, until a retry is answered by another process
        than the first; that retry (or the last one, when none was)."""
        first = self.world.retries.first
        origin = served_by(first)
        request = Request("POST", "/v1/chat/completions", token=self.world.key(key).secret,
                          json_body=self.world.retries.first_body, headers={"Idempotency-Key": self.retries.key(words)})
        sent = self.world.spread.sent = self.spread.until(
            request, f"retries with the idempotency key {words!r}",
            lambda exchanges: any(served_by(e) not in (None, origin) for e in exchanges))
        elsewhere = [e for e in sent if served_by(e) not in (None, origin)]
        retry = self.world.retries.retry = (elsewhere or sent)[0]
        return retry

    def expect_retry_elsewhere(self) -> None:
        first, retry = self.world.retries.first, self.world.retries.retry
        expect_true(served_by(retry) not in (None, served_by(first)),
                    f"Expected a retry to be served by another gateway process than the first request "
                    f"({served_by(first)}, request id {first.request_id}), but none was: "
                    f"{spread_summary(self.world.spread.sent)}", retry)
        replays = [e for e in self.world.spread.sent if e.response_headers.get("Idempotent-Replayed") != "true"]
        expect_true(not replays, f"Expected every retry to be answered as a replay (Idempotent-Replayed: true), but "
                                 f"{len(replays)} were not: {spread_summary(replays)}", (replays or [retry])[0])

    # ---- a hold that every process may expire ------------------------------------------------------------------------

    def read_until_expired(self, reservation: Reservation) -> Exchange:
        """Reads of the reservation's account (each of which expires its due holds), in bursts over every process,
        until the hold is no longer pending; then the reservation as the service reads it."""
        account = reservation.account
        request = Request("GET", f"/billing/accounts/{account.id}", token=self.billing.service(),
                          headers={"X-Identity-Anchor": account.anchor} if account.anchor else {})
        held = reservation.amount_micros
        self.world.spread.sent = self.spread.until(
            request, f"reads of account {account.id} while its hold runs out",
            lambda sent: any(e.status == 200 and e.json()["held_micros"] < held for e in sent))
        return self.billing.read_reservation(reservation)

    def expect_expired_once(self, reservation: Reservation, answer: Exchange) -> None:
        kinds = self.billing.entries_for(reservation)
        expect_equal(kinds, ["reserve", "expire"], f"the ledger entries of reservation {reservation.id}, oldest "
                     f"first, after {len(self.world.spread.sent)} reads of its account as it ran out", answer)

    def expect_reads_spread(self) -> None:
        self.spread.expect_several(self.world.spread.sent, "the reads of the account")

    # ---- a revoked key ---------------------------------------------------------------------------------------------

    def key_use(self, key: str) -> Request:
        """The cheapest request of an API key (as identity.use_key), described for a burst."""
        return Request("GET", "/v1/models", token=self.world.key(key).secret)

    def accepted_everywhere(self, key: str) -> None:
        sent = self.spread.reaching_every_process(self.key_use(key), f"the key {key!r} listing models")
        self.spread.expect_every(sent, f"the key {key!r}")
        refused = [e for e in sent if e.status != 200]
        expect_true(not refused, f"Expected every process to accept the key {key!r}, but: {spread_summary(refused)}",
                    (refused or sent)[0])

    def expect_refused_everywhere(self, key: str) -> None:
        """From the revocation's answer on, every request with the key is 401, on every process."""
        sent = self.world.spread.sent = self.spread.reaching_every_process(
            self.key_use(key), f"the revoked key {key!r} listing models")
        self.spread.expect_every(sent, f"the requests with the revoked key {key!r}")
        served = [e for e in sent if e.status != 401 or "revoked" not in str(problem_field(e, "detail")).lower()]
        expect_true(not served, f"Expected every process to refuse the revoked key {key!r} (401, saying it was "
                                f"revoked) from the revocation on, but {len(served)} answers were otherwise: "
                                f"{spread_summary(served)}", (served or sent)[0])

    # ---- a replica killed under traffic -------------------------------------------------------------------------

    def start_traffic(self, key: str, model: str) -> None:
        """Chat completions on a few threads through the load balancer, once they are being answered by every
        replica."""
        traffic = self.world.spread.traffic = SteadyTraffic(self.api, self.budgets.chat_request(key, model),
                                                            TRAFFIC_THREADS)
        traffic.start()
        traffic.wait_for("the traffic to be answered by every gateway process",
                         lambda ended: len({served_by(s.exchange) for s in ended} - {None}), self.spread.expected)

    def kill_replica(self) -> None:
        traffic = self.world.spread.traffic
        self.add_cleanup(self.stack.start_replicas)  # the next scenario meets every replica again
        self.world.spread.killed = self.stack.kill_replica()
        self.world.spread.killed_at = time.monotonic()
        traffic.wait_for(f"{AFTER_THE_KILL} requests sent after the replica was killed to end",
                         lambda ended: sum(s.started > self.world.spread.killed_at for s in ended), AFTER_THE_KILL)
        traffic.stop("steady traffic across the death of a gateway replica")

    def _after_and_across(self) -> tuple[list[Sent], list[Sent]]:
        """(requests sent after the kill, requests in flight when it happened)."""
        killed_at, sent = self.world.spread.killed_at, self.world.spread.traffic.sent
        return ([s for s in sent if s.started > killed_at],
                [s for s in sent if s.started <= killed_at < (s.ended or float("inf"))])

    def expect_served_after_the_kill(self) -> None:
        after, _ = self._after_and_across()
        failed = [s.exchange for s in after if s.exchange.status != 200]
        expect_true(not failed, f"Expected every request sent after the replica {self.world.spread.killed} was killed "
                                f"to be answered by a replica still running, but {len(failed)} of {len(after)} were "
                                f"not: {spread_summary(failed)}", (failed or [None])[0])
        dead = [s.exchange for s in after if served_by(s.exchange) and
                served_by(s.exchange).split(":")[0] == self.world.spread.killed]
        expect_true(not dead, f"Expected no answer from the killed replica {self.world.spread.killed} after its death, "
                              f"but: {spread_summary(dead)}", (dead or [None])[0])

    def expect_losses_within_the_kill(self) -> None:
        after, across = self._after_and_across()
        across_ids = {s.exchange.request_id for s in across}
        failed = [s.exchange for s in self.world.spread.traffic.sent if s.exchange.status != 200]
        outside = [e for e in failed if e.request_id not in across_ids]
        expect_true(not outside, f"Expected only requests in flight when the replica died to go unanswered, but "
                                 f"these were sent before or after it: {spread_summary(outside)}",
                    (outside or [None])[0])
        expect_true(len(failed) <= TRAFFIC_THREADS, f"Expected at most the {TRAFFIC_THREADS} requests in flight to "
                                                    f"go unanswered, but {len(failed)} did: {spread_summary(failed)}")

    def expect_charged_at_most_once(self, org: str) -> AccountLedger:
        """Once nothing is held any more: each answered completion charged exactly its cost, each unanswered one at
        most once (a hold that expired, or a charge the killed replica had journaled), and the ledger sound."""
        ledger = wait_until(f"the holds of {org!r} to be settled or expired", lambda: self.ledgers.of(org),
                            lambda seen: seen.held == 0, timeout=self.spread.timeout + 10,
                            describe=lambda seen: str(seen.describe()))
        self.ledgers.expect_sound(org, ledger)
        price = self.world.budgets.completion_price
        wrong = []
        for sent in self.world.spread.traffic.sent:
            exchange, hold = sent.exchange, ledger.reservation_for(sent.exchange.request_id)
            if exchange.status == 200 and (hold is None or hold["status"] != "finalized" or hold["actual"] != price):
                wrong.append(f"{exchange.request_id} answered but its hold is {hold}")
        statuses = Counter(r["status"] for r in ledger.reservations)
        expect_true(not wrong, f"Expected each answered completion to be charged its price {price} once, but: "
                               f"{wrong[:5]} (holds by status {dict(statuses)})")
        return ledger
