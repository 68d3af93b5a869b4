"""Faults between a model's answer and the gateway's books (issue 16): the database taken away while a backend is
answering, and the gateway dying once the charge is journaled and before it is written. The completion and its
charge are followed by support.domain.owed_charges; the stack's faults come from support.stress.faults (only the
embedded stack can take its database away or restart its gateway; elsewhere the scenario is skipped with why)."""
from __future__ import annotations

from support.client import evidence
from support.domain.owed_charges import CRASH_AFTER_JOURNAL, OwedCharges
from support.harness.waits import wait_until
from support.stress.faults import Faults


class SettlementFaults:
    def __init__(self, faults: Faults, owed: OwedCharges):
        self.faults, self.owed = faults, owed

    def answered_while_database_away(self, key: str) -> None:
        """A completion whose backend takes a moment: once its hold is placed the database goes away, and the
        client still gets the backend's answer."""
        self.faults.require("stop_database")
        self.owed.slow_backend()
        self.owed.start(key)
        self.faults.take_database_away()
        self.owed.finish(expect_answer=True)

    def cut_off_after_answer(self, key: str) -> None:
        """A completion whose charge the gateway journals before dying (test mode's fault header): the client gets
        no answer, and the gateway process is gone."""
        stack = self.faults.stack
        self.faults.require("restart_gateway")
        pid = stack.gateway_pid()
        self.faults.add_cleanup(self.faults.gateway_up_again_if_down)
        self.owed.start(key, fault=CRASH_AFTER_JOURNAL)
        self.owed.finish(expect_answer=False)
        wait_until(f"the gateway process {pid} to be gone", stack.gateway_pid, lambda now: now is None,
                   timeout=self.owed.timeout, describe=lambda now: f"the gateway process is {now}")
        evidence.attach_text("fault injected", f"The gateway (pid {pid}) journaled the charge of request "
                             f"{self.owed.owed.exchange.request_id} and died before writing it "
                             f"({CRASH_AFTER_JOURNAL}).")

    def start_gateway_again(self) -> None:
        self.faults.stack.restart_gateway()
