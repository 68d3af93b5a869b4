@allure.label.epic:Routing @needs_database @needs_stub_control @needs_one_process
Feature: A backend that keeps failing is skipped until it recovers
  A backend that keeps failing would cost every caller its time-out before the next backend answers. After a few
  failures in a row the gateway opens that backend's circuit: requests skip it at once and go to the next backend.
  After a cool-down one request probes it: if the probe is answered the circuit closes, if not it opens again.
  Platform admins see each circuit's state, and each change of state is in the audit log once.
  (Each model declares its own cool-down, so a scenario waits no longer for it than it needs.)

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And Olive has issued the API key "ci" for "Acme"

  Rule: After repeated failures the backend is skipped, without waiting for its time-out

    Background:
      Given the model "chat-guarded" routes to a primary and then a secondary backend, the primary given 0.5 seconds to answer, its circuit opening after 2 failures in a row and probed after 30 seconds

    Scenario: A primary that keeps timing out is skipped once its circuit has opened
      Given the primary backend's circuit has opened, the primary hanging
      When the key "ci" asks "chat-guarded" for a chat completion
      Then the completion is answered by the model's secondary backend
      And it was answered without waiting for the primary backend's time-out
      And the model's primary backend received no request for it
      And a platform admin sees the primary backend's circuit open
      And the audit log holds the primary backend's circuit changes, each once: open

  Rule: After the cool-down one request probes the backend, and its answer decides

    Background:
      Given the model "chat-guarded" routes to a primary and then a secondary backend, the primary given 0.3 seconds to answer, its circuit opening after 2 failures in a row and probed after 0.3 seconds

    Scenario: After the cool-down a probe reaches the recovered primary and closes the circuit
      Given the primary backend's circuit has opened, the primary hanging
      And the model's primary backend answers again
      And the primary backend's cool-down has passed
      When the key "ci" asks "chat-guarded" for a chat completion
      Then the completion is answered by the model's primary backend
      And a platform admin sees the primary backend's circuit closed
      And the audit log holds the primary backend's circuit changes, each once: open, half_open, closed

    Scenario: Of completions arriving together after the cool-down, one probes the primary, which opens it again
      Given the primary backend's circuit has opened, the primary hanging
      And the primary backend's cool-down has passed
      When 3 chat completions with the key "ci" arrive at once
      # Read first: the next cool-down runs from the failed probe.
      Then a platform admin sees the primary backend's circuit open
      And each is answered, and the primary backend received exactly one of them
      And the audit log holds the primary backend's circuit changes, each once: open, half_open, open
