"""Pulumi's mocks for the fast tier: a program run under ``pulumi.runtime.set_mocks`` that records every
registration (type, name, inputs, dependencies by name). Wiring only: every behaviour is also shown end to end."""
from __future__ import annotations

import pulumi

from tests.helpers import write

FILES = {"001_a.sql": "CREATE TABLE {{tables.docs}} (id serial PRIMARY KEY, body text);\n"
                      "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n"}


class Monitor(pulumi.runtime.mocks.MockMonitor):
    """Records every registration: (type, name, inputs, dependencies as names)."""

    def __init__(self, mocks):
        super().__init__(mocks)
        self.registered = []

    def RegisterResource(self, request):
        names = [urn.rsplit("::", 1)[-1] for urn in request.dependencies]
        response = super().RegisterResource(request)
        inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
        self.registered.append((request.type, request.name, inputs, names))
        return response


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return [f"{args.name}_id", dict(args.inputs)]

    def call(self, args):
        return {}


def deploy_fixture(tmp_path, monkeypatch):
    """deploy(build) runs ``build()`` (which creates components) under mocks; returns the registrations."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "migrations", FILES)
    pulumi.runtime.set_all_config({"postgresql:host": "db.internal", "postgresql:database": "app",
                                   "postgresql:username": "migrator"})

    def run(build):
        monitor = Monitor(Mocks())
        pulumi.runtime.set_mocks(Mocks(), preview=False, monitor=monitor)

        @pulumi.runtime.test
        def program():
            components = build()
            return pulumi.Output.all(*[c.applied for c in components]).apply(lambda _: None)

        program()
        return monitor.registered

    return run


def by_name(registered):
    return {name: (typ, inputs, deps) for typ, name, inputs, deps in registered}


def described(schema):
    """(path, property) for every property of the schema: inputs, outputs, types."""
    for token, resource in schema["resources"].items():
        for group in ("inputProperties", "properties"):
            for key, prop in resource.get(group, {}).items():
                yield f"{token}.{group}.{key}", prop
    for token, typ in schema["types"].items():
        for key, prop in typ.get("properties", {}).items():
            yield f"{token}.{key}", prop
