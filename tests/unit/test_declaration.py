"""Declared once, derived everywhere: the handlers serve exactly the declared routes."""

from __future__ import annotations

import importlib

import pytest
from underlay import declaration


@pytest.mark.parametrize("fn", [f for f in declaration.FUNCTIONS if declaration.routes_for(f.name)], ids=str)
def test_handlers_serve_exactly_the_declared_routes(fn: declaration.Function) -> None:
    app = importlib.import_module(f"functions.{fn.name}.app").app
    declared = {r.key for r in declaration.routes_for(fn.name)}
    assert app.served_route_keys() == declared


def test_every_declared_function_has_a_handler() -> None:
    for fn in declaration.FUNCTIONS:
        module, attr = fn.handler.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), attr)), fn.handler


def test_an_undeclared_route_fails_at_import() -> None:
    from underlay.http import create_app

    app = create_app("health")
    with pytest.raises(ValueError, match="not declared"):
        app.handles("GET /v1/health/secret")
    with pytest.raises(KeyError):
        create_app("nope")


def test_routes_are_unique_versioned_and_scoped() -> None:
    keys = [r.key for r in declaration.ROUTES]
    assert len(keys) == len(set(keys))
    for route in declaration.ROUTES:
        assert route.path.startswith("/v1/")
        assert route.scope is None or route.scope in declaration.SCOPES
        declaration.function(route.function)


def test_match_finds_routes_params_and_allowed_methods() -> None:
    assert declaration.match("GET", "/v1/health/live").route == declaration.route("GET /v1/health/live")
    wrong = declaration.match("POST", "/v1/health")
    assert wrong.route is None and wrong.allowed == ("GET",)
    assert declaration.match("GET", "/v1/nothing").allowed == ()


def test_queues_keep_visibility_at_six_times_the_worker_timeout() -> None:
    for queue in declaration.QUEUES:
        assert queue.visibility_timeout_s >= 6 * queue.worker_timeout_s
        assert queue.dlq_name.endswith("-dlq")


def test_admin_implies_every_scope() -> None:
    assert declaration.has_scope(frozenset({"platform:admin"}), "flags:write")
    assert not declaration.has_scope(frozenset({"flags:read"}), "flags:write")
    assert declaration.has_scope(frozenset(), None)
