"""Runs inside a behave process: the selected scenarios in the order their locations are given.

``behave --runner tools.parallel.ordered_runner:OrderedRunner FILE:LINE... | @FILE`` runs features by their first
location, then the scenarios, rules and outline rows inside each feature in the order given, instead of file
order. behave alone always runs a feature's scenarios top to bottom, which hides coupling between them.
"""
from __future__ import annotations

import os

from behave.model import Rule, ScenarioOutline
from behave.runner_util import collect_feature_locations

from support.runner import SuiteRunner

__all__ = ["OrderedRunner"]


class OrderedRunner(SuiteRunner):
    """The suite's runner, but features and scenarios run in the order of the given locations."""

    def run_model(self, features=None):
        order = {}
        try:
            for location in collect_feature_locations(self.config.paths):
                if location.line:
                    order.setdefault((os.path.abspath(location.filename), location.line), len(order))
        except Exception:  # pylint: disable=broad-except  (never stop a run over ordering)
            order = {}
        if order:
            self._reorder(self.features, order)
        return super().run_model(features)

    @classmethod
    def _position(cls, item, order) -> float:
        if isinstance(item, (Rule, ScenarioOutline)) or hasattr(item, "run_items"):
            scenarios = item.walk_scenarios() if hasattr(item, "walk_scenarios") else item.scenarios
        else:
            scenarios = [item]
        positions = [order.get((os.path.abspath(s.filename), s.line)) for s in scenarios]
        positions = [p for p in positions if p is not None]
        return min(positions) if positions else float("inf")

    @classmethod
    def _reorder(cls, features, order) -> None:
        features.sort(key=lambda feature: cls._position(feature, order))
        for feature in features:
            cls._reorder_container(feature, order)

    @classmethod
    def _reorder_container(cls, container, order) -> None:
        container.run_items.sort(key=lambda item: cls._position(item, order))
        for item in container.run_items:
            if isinstance(item, Rule):
                cls._reorder_container(item, order)
            elif isinstance(item, ScenarioOutline):
                item.scenarios.sort(key=lambda row: cls._position(row, order))
