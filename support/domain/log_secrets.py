"""The secrets a run handled, and a search of the gateway's own logs for any of them.

Every scenario's exchanges are read once it ends (`remember`): the passwords it sent, the bearer tokens it
presented, and the access and refresh tokens, API keys and invitation tokens it was given. After the run the
gateway's log lines are searched for those values and for anything shaped like a token, key or private key
(`search`); a hit fails the run with one line naming the log and the kind of secret, masked.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from support.harness.redaction import marker

# Response fields that carry a secret, by kind; request fields too.
ANSWER_SECRETS = {"access_token": "access token", "refresh_token": "refresh token", "key": "API key",
                  "token": "invitation token"}
REQUEST_SECRETS = {"password": "password", "refresh_token": "refresh token"}
# Anything of these shapes in a log line is a leak, whoever's it is. Invitation ids (inv_ + 32 hex) are not tokens.
SHAPES = (("access or refresh token", re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
          ("API key", re.compile(r"tg_[A-Za-z0-9_-]{20,}")),
          ("invitation token", re.compile(r"inv_[A-Za-z0-9_-]{40,}")),
          ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")))
CANDIDATE = re.compile(r"[A-Za-z0-9_.~+=-]{8,}")


@dataclass(frozen=True)
class Leak:
    log: str
    line: int
    kind: str
    value: str

    def __str__(self) -> str:
        article = "an" if self.kind[0] in "aeiouAEIOU" else "a"
        return (f"the gateway's log {self.log} holds {article} {self.kind} the run handled "
                f"({marker('secret', self.value)}) at line {self.line}")


@dataclass
class SecretsSeen:
    secrets: dict[str, str] = field(default_factory=dict)  # value -> kind

    def add(self, value, kind: str) -> None:
        if isinstance(value, str) and len(value) >= 8:
            self.secrets[value] = kind

    def remember(self, exchanges) -> None:
        """The secrets a scenario's exchanges carried, either way."""
        for exchange in exchanges:
            authorization = (exchange.request_headers or {}).get("Authorization") or ""
            if authorization.startswith("Bearer "):
                self.add(authorization[len("Bearer "):], "bearer token")
            body = exchange.request_body
            if isinstance(body, dict):
                for name, kind in REQUEST_SECRETS.items():
                    self.add(body.get(name), kind)
            if exchange.status is not None and 200 <= exchange.status < 300:
                self._from_answer(exchange.text)

    def _from_answer(self, text: str) -> None:
        try:
            answer = json.loads(text)
        except ValueError:
            return
        found = [answer] if isinstance(answer, dict) else []
        while found:
            document = found.pop()
            for name, value in document.items():
                if isinstance(value, dict):
                    found.append(value)
                elif name in ANSWER_SECRETS:
                    self.add(value, ANSWER_SECRETS[name])

    def leaks(self, logs: dict[str, list[str]]) -> list[Leak]:
        """Every log line holding a remembered secret or something shaped like one."""
        found = []
        for process, lines in logs.items():
            for number, line in enumerate(lines, start=1):
                leak = self._in_line(line)
                if leak is not None:
                    found.append(Leak(f"{process}.log", number, *leak))
        return found

    def _in_line(self, line: str) -> tuple[str, str] | None:
        for candidate in CANDIDATE.findall(line):
            if candidate in self.secrets:
                return self.secrets[candidate], candidate
        for kind, shape in SHAPES:
            match = shape.search(line)
            if match:
                return kind, match.group(0)
        return None

    def search(self, stack, lines: int = 10_000_000) -> None:
        """Raise with one line when one of the stack's gateway logs holds a secret (nothing to search when the
        stack shows no logs, as an external one without -D logs_dir)."""
        logs = {name: found for name, found in stack.logs(lines).items() if "gateway" in name}
        leaks = self.leaks(logs)
        if leaks:
            more = f" (and {len(leaks) - 1} more line(s))" if len(leaks) > 1 else ""
            raise AssertionError(f"{leaks[0]}{more}; the gateway must never log a secret")
