@allure.label.epic:Orgs
Feature: An org always has an owner
  Owners can hand ownership on and step down, but the last owner can neither step down nor be removed: the
  gateway refuses, saying why, and the refusal is audited. Two owners stepping down at the same moment cannot
  leave the org without one.

  Background:
    Given the org "Acme" with its owner "Olive"

  Rule: The last owner can neither step down nor leave

    Scenario: The last owner cannot step down
      When Olive tries to make herself a member of "Acme"
      Then Olive is refused because she is the last owner
      And Olive is still an owner of "Acme"

    Scenario: The last owner cannot leave
      When Olive tries to remove herself from "Acme"
      Then Olive is refused because she is the last owner
      And Olive is still an owner of "Acme"

  Rule: An owner may step down once someone else owns the org, and never leaves it without an owner

    Scenario: An owner can step down once someone else owns the org
      Given Rita is an owner of "Acme"
      When Olive makes herself a member of "Acme"
      Then Olive is a member of "Acme" and Rita its owner

    Scenario: Two owners stepping down at the same moment leave one owner
      Given Rita is an owner of "Acme"
      When Olive and Rita both step down to member at the same moment
      Then exactly one of them is refused because she is the last owner
      And "Acme" still has exactly one owner
